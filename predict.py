"""Label a file with a saved model: classes, tags and entities, or sentence embeddings (.npy).

    python predict.py --model_dir checkpoint --input_file texts.txt --output_file labels.txt [--return_probs]
"""
from bertorch.predict import main

if __name__ == "__main__":
    main()
