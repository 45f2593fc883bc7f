"""Distil a fine-tuned teacher (run_classifier.py / run_ner.py output) into a smaller student: soft-label KD,
hard labels, TinyBERT/TextBrewer intermediate matches, several teachers, unlabelled augmentation data.

    python run_distill.py --teacher_model_dir out/teacher --student_layers 2 \\
        --train_data_file chnsenticorp/train.tsv --dev_data_file chnsenticorp/dev.tsv \\
        --label_file chnsenticorp/labels.txt --matches hidden_mse --aux_data_file unsup/sentences.txt
    python run_distill.py --task sequence_labeling --teacher_model_dir out/ner --student_model tinybert4.json \\
        --hard_label_loss crf --matches tinybert --train_data_file ner/resume/train.json ...
    torchrun --nproc_per_node=2 run_distill.py ...      # the teacher is never wrapped in DDP

Multi-task (TextBrewer's MultiTaskDistiller): teachers of different tasks, each with its own data, into one
student encoder with a head per task; --saved_dir/<name>/ is a model directory of that task alone:

    python run_distill.py --task multitask --student_layers 2 \\
        --task_spec name=senti teacher=out/senti train=chnsenticorp/train.tsv dev=chnsenticorp/dev.tsv \\
        --task_spec name=resume teacher=out/resume train=ner/resume/train.json dev=ner/resume/dev.json

At the end the log (and all_results.json, distill_report.json) compares teacher and student: dev metric,
parameters, size on disk and dev-set throughput at the same batch size.
"""
from bertorch.distill_command import run


def main(argv=None):
    return run(argv, description=__doc__)


if __name__ == "__main__":
    main()
