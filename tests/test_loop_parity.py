"""Our training loop does the maths of a plain transformers loop (issue 14: it must not learn worse).

The reference is the loop a user writes from transformers' examples: AutoModelForSequenceClassification,
AdamW with no decay on biases and LayerNorm, the linear warm-up schedule, clipping at 1.0, batches padded
to their longest by the tokenizer. Given the same batches it must give the same loss at every step; with
length grouping and low-memory training on, a step's loss and gradients must be the stock model's on the
same examples. The same holds for every task's loop: NER (Linear and CRF, against
AutoModelForTokenClassification and pytorch-crf), Sentence-BERT and SimCSE (dropout on: the same masks).
"""
import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, get_scheduler

import run_classifier
import run_ner
from bertorch.data.batching import TrainBatchSampler
from bertorch.data.readers import read_classification, read_labels
from bertorch.losses.classification import build_loss
from bertorch.models.classifier import SequenceClassifier
from bertorch.models.low_memory import use_low_memory_training
from bertorch.models.random_init import build_char_vocab, make_random_bert

SEED, BATCH, LR, WARMUP, DECAY = 7, 8, 3e-3, 0.1, 0.01


def plain_training(modules, steps, batches_of, loss_of, lr_of=lambda module: LR):
    """The body of every plain loop: AdamW (decay on matrices only, each module at `lr_of(module)`), the linear
    warm-up schedule, clipping at 1.0; `batches_of(epoch)` lists the epoch's batches, `loss_of(batch)` gives
    a batch's loss. Returns the loss of every step."""
    groups = [{"params": [p for p in m.parameters() if p.requires_grad and (p.ndim >= 2) == matrix],
               "lr": lr_of(m), "weight_decay": DECAY if matrix else 0.0} for m in modules for matrix in (True, False)]
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=LR)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=int(steps * WARMUP + 0.999),
                              num_training_steps=steps)
    for module in modules:
        module.train()
    losses, epoch = [], 0
    while len(losses) < steps:
        for batch in batches_of(epoch):
            loss = loss_of(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            if len(losses) == steps:
                break
        epoch += 1
    return losses


def epoch_batches(rows, seed=SEED):
    """`batches_of(epoch)` over `rows`: the batches our sampler yields without length grouping."""
    sampler = TrainBatchSampler([0] * len(rows), BATCH, seed=seed, group_by_length=False)

    def batches_of(epoch):
        sampler.set_epoch(epoch)
        return [[rows[i] for i in indices] for indices in sampler]
    return batches_of


def plain_loop(model_dir, files, steps, seed=SEED):
    """A stock classification loop over the batches our sampler yields without grouping."""
    labels = read_labels(files["labels"])
    examples = read_classification(files["train"], labels, False)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = AutoConfig.from_pretrained(model_dir, num_labels=len(labels))
    torch.manual_seed(seed)  # the head is initialised from the seed, as in our run
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, config=config)

    def loss_of(batch):
        enc = tokenizer([e.text_a for e in batch], padding=True, return_tensors="pt")
        return F.cross_entropy(model(**enc).logits, torch.tensor([labels.index(e.label) for e in batch]))
    return plain_training([model], steps, epoch_batches(examples, seed), loss_of)


def our_losses(main, model_dir, out, steps, *flags):
    """Per-step training losses of our `main` (a run_*.py's) on the plain loop's recipe."""
    main(["--pretrained_model_name_or_path", model_dir, "--saved_dir", str(out), "--batch_size", str(BATCH),
          "--learning_rate", str(LR), "--warmup_proportion", str(WARMUP), "--weight_decay", str(DECAY),
          "--max_steps", str(steps), "--logging_steps", "1", "--save_steps", "0", "--seed", str(SEED), *flags])
    rows = [json.loads(line) for line in open(out / "metrics.jsonl", encoding="utf-8")]
    return [r["loss"] for r in rows if r["kind"] == "train"]


def test_every_step_loss_equals_the_plain_loop(tiny_bert, sentiment_files, tmp_path):
    steps = 36  # 64 examples / batch 8: four and a half epochs, through epoch boundaries
    ours = our_losses(run_classifier.main, tiny_bert, tmp_path / "out", steps, "--train_data_file",
                      sentiment_files["train"], "--label_file", sentiment_files["labels"], "--no-group_by_length",
                      "--no-low_memory_training")
    plain = plain_loop(tiny_bert, sentiment_files, steps)
    assert len(ours) == steps
    assert ours == pytest.approx(plain, rel=1e-5, abs=1e-6)
    assert sum(plain[-4:]) / 4 < sum(plain[:4]) / 4 - 0.1  # it learns: not a comparison of two flat lines


@pytest.fixture(scope="module")
def bert_with_dropout(tmp_path_factory, tiny_texts):
    from conftest import EXTRA_CHARS

    out = tmp_path_factory.mktemp("bert_dropout")
    return make_random_bert(str(out), build_char_vocab(tiny_texts + [EXTRA_CHARS]), hidden_size=32, num_layers=2,
                            num_heads=2, intermediate_size=64)  # BERT's default dropout of 0.1


def grads_of(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_low_memory_grouped_step_has_the_stock_loss_and_gradients(bert_with_dropout, sentiment_files):
    """A length-grouped batch padded by our collate, through the low-memory path, against the stock model on
    the tokenizer's padding of the same examples. Dropout is what differs between the two by design (other
    random draws), so the maths is compared with p = 1e-9: our attention, FFN and dropout code paths still
    run (they take over only for p > 0 in training), and neither side drops anything (our mask keeps an
    element unless a 16-bit draw falls below round(p * 65536) = 0)."""
    labels = read_labels(sentiment_files["labels"])
    examples = read_classification(sentiment_files["train"], labels, False)
    tokenizer = AutoTokenizer.from_pretrained(bert_with_dropout)
    lengths = [len(tokenizer(e.text_a)["input_ids"]) for e in examples]
    batch = next(iter(TrainBatchSampler(lengths, BATCH, seed=SEED, group_by_length=True)))
    assert len({lengths[i] for i in batch}) > 1  # the batch needs padding, so the mask matters
    config = AutoConfig.from_pretrained(bert_with_dropout, num_labels=2, hidden_dropout_prob=1e-9,
                                        attention_probs_dropout_prob=1e-9)
    torch.manual_seed(0)
    stock = AutoModelForSequenceClassification.from_pretrained(bert_with_dropout, config=config)
    ours = SequenceClassifier(AutoModelForSequenceClassification.from_pretrained(bert_with_dropout, config=config),
                              build_loss("cross_entropy", 2))
    ours.backbone.load_state_dict(stock.state_dict())
    assert use_low_memory_training(ours) == {"attention": 1, "ffn": 2, "dropout": 8}
    stock.train(), ours.train()
    texts = [examples[i].text_a for i in batch]
    y = torch.tensor([labels.index(examples[i].label) for i in batch])
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    width = max(lengths[i] for i in batch) + 3  # our collate pads to the batch's longest; any width must do
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, i in enumerate(batch):
        n = lengths[i]
        ids[row, :n], mask[row, :n] = enc["input_ids"][row, :n], 1
    stock_loss = F.cross_entropy(stock(**enc).logits, y)
    our_loss = ours(input_ids=ids, attention_mask=mask, labels=y).loss
    assert our_loss.item() == pytest.approx(stock_loss.item(), rel=1e-5)
    g_stock, g_ours = grads_of(stock, stock_loss), grads_of(ours.backbone, our_loss)
    assert g_stock.keys() == g_ours.keys()
    for name in g_stock:
        torch.testing.assert_close(g_ours[name], g_stock[name], rtol=1e-4, atol=1e-6, msg=name)


# Sequence labelling: run_ner.py against the loop a user writes from transformers' token-classification
# example (words = characters, the label on each word's first sub-token, -100 elsewhere), Linear and CRF.
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "S-PER"]
NER_DOCS = [("张三去北京", "B-PER I-PER O B-LOC I-LOC"), ("李四在上海公司。", "B-PER I-PER O B-LOC I-LOC O O O"),
            ("上海的张！", "B-LOC I-LOC O S-PER O"), ("北京很好，李四去", "B-LOC I-LOC O O O B-PER I-PER O"),
            ("ABC公司很好😀", "O O O O O O O O")]  # no spaces: a plain tokenizer call drops them as words


@pytest.fixture(scope="module")
def ner_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ner_parity")
    rows = [json.dumps({"text": list(t), "label": tags.split()}, ensure_ascii=False) for t, tags in NER_DOCS]
    (d / "train.json").write_text("\n".join(rows * 6) + "\n", encoding="utf-8")
    (d / "labels.txt").write_text("\n".join(NER_LABELS) + "\n", encoding="utf-8")
    return {"train": str(d / "train.json"), "labels": str(d / "labels.txt")}


def plain_ner_loop(model_dir, files, steps, use_crf, crf_lr=None):
    from torchcrf import CRF
    from transformers import AutoModelForTokenClassification

    docs = [json.loads(line) for line in open(files["train"], encoding="utf-8")]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(SEED)
    model = AutoModelForTokenClassification.from_pretrained(model_dir, num_labels=len(NER_LABELS))
    crf = CRF(len(NER_LABELS), batch_first=True) if use_crf else None

    def loss_of(batch):
        enc = tokenizer([d["text"] for d in batch], is_split_into_words=True, padding=True, return_tensors="pt")
        labels = torch.full(enc["input_ids"].shape, -100)
        for row, doc in enumerate(batch):
            words = enc.word_ids(row)
            for t, w in enumerate(words):
                if w is not None and (t == 0 or words[t - 1] != w):
                    labels[row, t] = NER_LABELS.index(doc["label"][w])
        logits = model(**enc).logits
        if crf is None:
            return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        # the CRF runs over characters: each row's labelled positions, moved to the front
        lengths = (labels != -100).sum(1)
        emissions = torch.zeros(len(batch), int(lengths.max()), len(NER_LABELS))
        tags = torch.zeros(emissions.shape[:2], dtype=torch.long)
        for row in range(len(batch)):
            keep = labels[row] != -100
            emissions[row, :lengths[row]], tags[row, :lengths[row]] = logits[row, keep], labels[row, keep]
        mask = torch.arange(emissions.shape[1])[None] < lengths[:, None]
        return -crf(emissions, tags, mask=mask, reduction="mean")
    return plain_training([model] + ([crf] if crf else []), steps, epoch_batches(docs), loss_of,
                          lr_of=lambda module: crf_lr if module is crf else LR)


@pytest.mark.parametrize("head", ["linear", "crf"])
def test_ner_every_step_loss_equals_the_plain_loop(tiny_bert, ner_files, tmp_path, head):
    steps = 16  # 30 documents / batch 8: four epochs, the last batch of each short
    flags = ["--use_crf", "--crf_learning_rate", "3e-2"] if head == "crf" else []
    ours = our_losses(run_ner.main, tiny_bert, tmp_path / "out", steps, "--train_data_file", ner_files["train"],
                      "--label_file", ner_files["labels"], "--no-group_by_length", "--no-low_memory_training", *flags)
    plain = plain_ner_loop(tiny_bert, ner_files, steps, head == "crf", crf_lr=3e-2)
    assert len(ours) == steps
    assert ours == pytest.approx(plain, rel=1e-5, abs=1e-6)
    assert sum(plain[-4:]) / 4 < sum(plain[:4]) / 4 - 0.1  # it learns: not a comparison of two flat lines


# Sentence embeddings: Sentence-BERT's softmax over (u, v, |u-v|) of mean-pooled vectors, and SimCSE's in-batch
# negatives (the original bertorch's: cosine minus a margin on the positive, times a scale), each against the
# loop a user writes from the papers, on the same batches.
def plain_sentence_loop(model_dir, batches_of, steps, loss_of, head=None):
    """`batches_of(epoch)`: the epoch's lists of (text_a, text_b[, label]); `loss_of(model, head, batch)`."""
    from transformers import AutoModel

    torch.manual_seed(SEED)
    model = AutoModel.from_pretrained(model_dir)
    head = head() if head else None
    model.pooler.requires_grad_(False)  # mean / [CLS] pooling: the pooler layer is not used (nor trained)
    return plain_training([model] + ([head] if head else []), steps, batches_of,
                          lambda batch: loss_of(model, head, batch))


def mean_pooled(model, tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    states = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return (states * mask).sum(1) / mask.sum(1)


def test_sentencebert_every_step_loss_equals_the_plain_loop(tiny_bert, tmp_path):
    from conftest import NEGATIVE, POSITIVE
    from run_sentencebert import main

    texts = POSITIVE + NEGATIVE
    rows = [(a, b, int(i % 3 != 0)) for i, (a, b) in enumerate(zip(texts, texts[1:] + texts[:1]))] * 2
    path = tmp_path / "pairs.txt"
    path.write_text("".join(f"{a}\t{b}\t{y}\n" for a, b, y in rows), encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    hidden = AutoConfig.from_pretrained(tiny_bert).hidden_size

    def loss_of(model, head, batch):
        u = mean_pooled(model, tokenizer, [r[0] for r in batch])
        v = mean_pooled(model, tokenizer, [r[1] for r in batch])
        logits = head(torch.cat([u, v, (u - v).abs()], -1))
        return F.cross_entropy(logits, torch.tensor([r[2] for r in batch]))

    steps = 12  # 32 pairs / batch 8: three epochs
    ours = our_losses(main, tiny_bert, tmp_path / "out", steps, "--no-group_by_length", "--no-low_memory_training",
                      "--train_data_file", str(path),
                               "--pooling_mode", "mean")
    plain = plain_sentence_loop(tiny_bert, epoch_batches(rows), steps, loss_of,
                                head=lambda: torch.nn.Linear(3 * hidden, 2))
    assert len(ours) == steps
    assert ours == pytest.approx(plain, rel=1e-5, abs=1e-6)
    assert sum(plain[-3:]) / 3 < sum(plain[:3]) / 3 - 0.05  # it learns


def test_simcse_every_step_loss_equals_the_plain_loop(bert_with_dropout, tmp_path):
    """With dropout on (BERT's 0.1): each sentence goes through the encoder twice in one pass, [x0, x0, x1, x1,
    ...], so the plain loop draws the very same dropout masks as ours, and the two views differ."""
    from conftest import NEGATIVE, POSITIVE
    from run_simcse import main

    texts = (POSITIVE + NEGATIVE) * 2
    path = tmp_path / "sentences.txt"
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(bert_with_dropout)
    scale, margin = 20.0, 0.2

    def loss_of(model, head, batch):
        enc = tokenizer([t for t in batch for _ in range(2)], padding=True, return_tensors="pt")
        cls = model(**enc).last_hidden_state[:, 0].view(len(batch), 2, -1)
        cos = F.normalize(cls[:, 0], dim=-1) @ F.normalize(cls[:, 1], dim=-1).T
        cos = cos - margin * torch.eye(len(batch))
        return F.cross_entropy(scale * cos, torch.arange(len(batch)))

    steps = 8  # 32 sentences / batch 8: two epochs
    ours = our_losses(main, bert_with_dropout, tmp_path / "out", steps, "--no-group_by_length",
                      "--no-low_memory_training", "--train_data_file", str(path),
                               "--pooling_mode", "cls", "--scale", str(scale), "--margin", str(margin))
    plain = plain_sentence_loop(bert_with_dropout, epoch_batches(texts), steps, loss_of)
    assert len(ours) == steps
    assert ours == pytest.approx(plain, rel=1e-5, abs=1e-6)
    assert plain[0] > 0.05  # two dropout views of one sentence: the positive is not trivially the nearest
