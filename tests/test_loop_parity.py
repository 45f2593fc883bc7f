"""Our training loop does the maths of a plain transformers loop (issue 14: it must not learn worse).

The reference is the loop a user writes from transformers' examples: AutoModelForSequenceClassification,
AdamW with no decay on biases and LayerNorm, the linear warm-up schedule, clipping at 1.0, batches padded
to their longest by the tokenizer. Given the same batches it must give the same loss at every step; with
length grouping and low-memory training on, a step's loss and gradients must be the stock model's on the
same examples.
"""
import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, get_scheduler

import run_classifier
from bertorch.data.batching import TrainBatchSampler
from bertorch.data.readers import read_classification, read_labels
from bertorch.losses.classification import build_loss
from bertorch.models.classifier import SequenceClassifier
from bertorch.models.low_memory import use_low_memory_training
from bertorch.models.random_init import build_char_vocab, make_random_bert

SEED, BATCH, LR, WARMUP, DECAY = 7, 8, 3e-3, 0.1, 0.01


def plain_loop(model_dir, files, steps, seed=SEED):
    """A stock loop over the batches our sampler yields without grouping; returns the loss of every step."""
    labels = read_labels(files["labels"])
    examples = read_classification(files["train"], labels, False)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = AutoConfig.from_pretrained(model_dir, num_labels=len(labels))
    torch.manual_seed(seed)  # the head is initialised from the seed, as in our run
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, config=config)
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    decay = [p for p in model.parameters() if p.ndim >= 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": DECAY}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=LR)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=int(steps * WARMUP + 0.999),
                              num_training_steps=steps)
    lengths = [len(tokenizer(e.text_a)["input_ids"]) for e in examples]
    sampler = TrainBatchSampler(lengths, BATCH, seed=seed, group_by_length=False)
    losses, epoch = [], 0
    model.train()
    while len(losses) < steps:
        sampler.set_epoch(epoch)
        for indices in sampler:
            enc = tokenizer([examples[i].text_a for i in indices], padding=True, return_tensors="pt")
            y = torch.tensor([labels.index(examples[i].label) for i in indices])
            loss = F.cross_entropy(model(**enc).logits, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            if len(losses) == steps:
                break
        epoch += 1
    return losses


def our_losses(model_dir, files, out, steps, *flags):
    run_classifier.main([
        "--pretrained_model_name_or_path", model_dir, "--train_data_file", files["train"],
        "--label_file", files["labels"], "--saved_dir", str(out), "--batch_size", str(BATCH),
        "--learning_rate", str(LR), "--warmup_proportion", str(WARMUP), "--weight_decay", str(DECAY),
        "--max_steps", str(steps), "--logging_steps", "1", "--save_steps", "0", "--seed", str(SEED), *flags])
    rows = [json.loads(line) for line in open(out / "metrics.jsonl", encoding="utf-8")]
    return [r["loss"] for r in rows if r["kind"] == "train"]


def test_every_step_loss_equals_the_plain_loop(tiny_bert, sentiment_files, tmp_path):
    steps = 36  # 64 examples / batch 8: four and a half epochs, through epoch boundaries
    ours = our_losses(tiny_bert, sentiment_files, tmp_path / "out", steps, "--no-group_by_length",
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
