"""Opening a pretrained model (a local directory or a hub name) for training and prediction alike.

Everything that reads a model's config, tokenizer or weights goes through here, so each way a directory cannot
work is found before any data is tokenised and is one `ModelError` line naming the path, whether a training
script or a Predictor opened it: no such path, not a BERT-family encoder (GPT-2 would fail later with "no
padding token"), --max_seq_length past the position embeddings (an index error mid-run otherwise), no
tokenizer files (transformers would build a 5-token tokenizer that maps every character to [UNK]), a truncated
or corrupt .safetensors file, weights whose bytes changed after bertorch saved them (bertorch.json keeps a
sha256 of each file: safetensors checks its header, not its data), a label head of another size than the one
asked for, a saved model of another task or NER head (same-sized heads would load into the wrong one).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig

from bertorch.errors import ModelError
from bertorch.model_dir import CRF_WEIGHTS_NAME, HEAD_WEIGHTS_NAME, POOLING_WEIGHTS_NAME, TASK_FILE, read_task_info

MODEL_FLAG = "--pretrained_model_name_or_path"
WEIGHTS_NAME, WEIGHTS_INDEX_NAME = "model.safetensors", "model.safetensors.index.json"
# Files that hold a vocabulary (tokenizer_config.json alone does not: from it transformers builds a tokenizer
# of the special tokens only).
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model",
                    "tokenizer.model", "sentencepiece.model")
# Position ids of these start after the padding index, so max_position_embeddings - (pad_token_id + 1) fit.
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm",
                    "data2vec-text", "longformer", "xmod", "luke", "ibert")


def _named(name_or_path: str, flag: str | None) -> str:
    return f"{flag} {name_or_path!r}" if flag else repr(name_or_path)


def check_model_path(name_or_path: str, flag: str | None = MODEL_FLAG) -> None:
    """A path-like name that does not exist is a typo, not a hub id: say so instead of a hub error."""
    if os.path.exists(os.path.expanduser(name_or_path)):
        return
    is_hub_id = not name_or_path.startswith((".", "/", "~")) and name_or_path.count("/") <= 1
    if not is_hub_id:
        raise ModelError(f"{_named(name_or_path, flag)}: no such directory")


def load_config(name_or_path: str, flag: str | None = MODEL_FLAG, **overrides) -> PretrainedConfig:
    """The config, refused unless it is an encoder bertorch can fine-tune; with `num_labels` among the overrides,
    refused when the directory's own label head has another size (transformers' size-mismatch error otherwise)."""
    check_model_path(name_or_path, flag)
    try:
        config = AutoConfig.from_pretrained(name_or_path, **overrides)
    except (OSError, ValueError) as e:
        where = "directory" if os.path.isdir(name_or_path) else "path or model name"
        raise ModelError(f"{_named(name_or_path, flag)}: cannot load a model config from this {where} "
                         f"({str(e).splitlines()[0]}). Give a local directory with config.json, or a hub name on a "
                         f"machine with internet access.") from None
    check_encoder(config, name_or_path, flag)
    if "num_labels" in overrides and os.path.isdir(name_or_path):
        check_label_head(name_or_path, config, flag)
    return config


def check_encoder(config: PretrainedConfig, name_or_path: str, flag: str | None = MODEL_FLAG) -> None:
    """bertorch fine-tunes BERT-family encoders (the model types transformers has a masked-LM head for)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    kind = getattr(config, "model_type", None)
    if kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES or getattr(config, "is_encoder_decoder", False):
        raise ModelError(f"{_named(name_or_path, flag)}: not a BERT-family encoder (model_type {kind}); bertorch "
                         f"fine-tunes encoders such as bert, roberta, electra, albert, deberta-v2")


def position_limit(config: PretrainedConfig) -> int | None:
    """The most tokens one input may have (None when the config does not say)."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return None
    if config.model_type in OFFSET_POSITIONS:
        positions -= (config.pad_token_id or 0) + 1
    return positions


def check_max_length(config: PretrainedConfig, max_length: int, name_or_path: str,
                     flag: str = "--max_seq_length") -> None:
    limit = position_limit(config)
    if limit is not None and max_length > limit:
        raise ModelError(f"{flag} {max_length} is more than {name_or_path} takes: its position embeddings fit "
                         f"{limit} tokens (max_position_embeddings {config.max_position_embeddings}); use "
                         f"{flag} {limit} or less")


def check_label_head(directory: str, config: PretrainedConfig, flag: str | None = MODEL_FLAG) -> None:
    """A directory saved with a classification head of another size than `config.num_labels` asks for."""
    saved_file = os.path.join(directory, "config.json")
    if not os.path.isfile(saved_file):
        return
    with open(saved_file, encoding="utf-8") as f:
        saved = json.load(f)
    head = next((a for a in saved.get("architectures") or [] if a.endswith(("SequenceClassification",
                                                                            "TokenClassification"))), None)
    saved_labels = [label for _, label in sorted((saved.get("id2label") or {}).items(), key=lambda kv: int(kv[0]))]
    if head is None or not saved_labels or len(saved_labels) == config.num_labels:
        return
    asked = [config.id2label[i] for i in range(config.num_labels)]
    raise ModelError(f"{_named(directory, flag)} holds a {head} with {len(saved_labels)} labels "
                     f"({_labels(saved_labels)}), but this run has {len(asked)} labels ({_labels(asked)}): give the "
                     f"label file it was trained with, or start a new head from its encoder with "
                     f"--init_from_ckpt {directory} and its base model as {MODEL_FLAG}")


def head_kind(info: dict) -> str:
    """The kind of model a bertorch.json (or a task's task_info) describes, in words: its task, and a tagger's head."""
    task = info.get("task")
    if task == "ner":
        return f"NER model with a {info.get('head') or ('crf' if info.get('use_crf') else 'linear')} head"
    return f"{task} model"


def check_saved_task(directory: str, info: dict, flag: str | None = MODEL_FLAG) -> None:
    """A saved bertorch model of another task or NER head than the one this run builds (`info`, its task_info).

    The label count can match and the weights still not fit: a classifier's head has the shape of a tagger's
    Linear head and would load as one (same size, another meaning), and a CRF or span head would be dropped
    without a word. Directories without bertorch.json (a pretrained encoder, a plain transformers model) pass."""
    if not os.path.isfile(os.path.join(directory, TASK_FILE)):
        return
    saved, asked = head_kind(read_task_info(directory)), head_kind(info)
    if saved != asked:
        raise ModelError(f"{_named(directory, flag)} is a saved {saved}, but this run builds a {asked}: continue it "
                         f"with the same task and head, or start a new head from its encoder with --init_from_ckpt "
                         f"{directory} and its base model as {MODEL_FLAG}")


def _labels(labels: list[str], shown: int = 6) -> str:
    return ", ".join(labels[:shown]) + (", ..." if len(labels) > shown else "")


def check_pretrained(name_or_path: str, max_length: int | None = None, flag: str | None = MODEL_FLAG,
                     length_flag: str = "--max_seq_length") -> PretrainedConfig:
    """Every check that needs no model built: the path, the config (an encoder), `max_length` against the position
    embeddings, and, for a local directory, the tokenizer files and each .safetensors file's header. Run before
    data is tokenised, so a directory that cannot work costs no time."""
    config = load_config(name_or_path, flag)
    if max_length is not None:
        check_max_length(config, max_length, name_or_path, length_flag)
    if os.path.isdir(name_or_path):
        if not any(os.path.isfile(os.path.join(name_or_path, n)) for n in VOCABULARY_FILES):
            raise ModelError(f"{_named(name_or_path, flag)}: no tokenizer files here (tokenizer.json or vocab.txt); "
                             f"copy them from the model this one was trained from")
        check_weight_files(name_or_path)
    return config


def weight_files(directory: str) -> list[str]:
    """The .safetensors files of a model directory: the model's (single or sharded) and bertorch's own parts."""
    names = [WEIGHTS_NAME, HEAD_WEIGHTS_NAME, CRF_WEIGHTS_NAME, POOLING_WEIGHTS_NAME]
    index = os.path.join(directory, WEIGHTS_INDEX_NAME)
    if os.path.isfile(index):
        names += sorted(set(_read_index(index)["weight_map"].values()))
    return [os.path.join(directory, n) for n in names if os.path.isfile(os.path.join(directory, n))]


def _read_index(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
        if isinstance(index.get("weight_map"), dict):
            return index
    except (ValueError, AttributeError):
        pass
    raise ModelError(f"{path}: not a valid shard index (JSON with a weight_map); the file is corrupt")


def check_weight_files(directory: str) -> None:
    """Read each .safetensors header (no tensors): a truncated or corrupt file is named here, not in a traceback.
    Then, where bertorch.json recorded their digests, the bytes of the weights themselves."""
    for path in weight_files(directory):
        try:
            with safe_open(path, framework="pt") as f:
                f.keys()
        except (SafetensorError, OSError) as e:
            raise _corrupt(path, e) from None
    check_weight_digests(directory)


DIGESTS_KEY = "weights_sha256"  # in bertorch.json: file name -> sha256 of its bytes when it was saved
_verified: dict[tuple, str] = {}  # (path, size, mtime) -> digest: a directory opened twice is hashed once


def file_sha256(path: str) -> str:
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        _verified[key] = digest.hexdigest()
    return _verified[key]


def weight_digests(directory: str) -> dict[str, str]:
    """sha256 of each weight file of a directory just written (about 0.3 s for m3e-small's 96 MB)."""
    return {os.path.basename(path): file_sha256(path) for path in weight_files(directory)}


def check_weight_digests(directory: str) -> None:
    """A weight file whose bytes differ from the digest its bertorch.json recorded: a flipped byte inside the tensor
    data passes the header check and would load as other weights without a word. Files not present are not
    checked (an ONNX export keeps bertorch.json without model.safetensors)."""
    if not os.path.isfile(os.path.join(directory, TASK_FILE)):
        return
    recorded = read_task_info(directory).get(DIGESTS_KEY)
    if not isinstance(recorded, dict):
        return  # saved before digests were kept, or by hand
    for name, expected in recorded.items():
        path = os.path.join(directory, name)
        if os.path.isfile(path) and file_sha256(path) != expected:
            raise ModelError(f"{path}: its bytes differ from the sha256 {TASK_FILE} recorded when it was saved: the "
                             f"file is corrupt or was replaced; copy or save it again (or delete \"{DIGESTS_KEY}\" "
                             f"from {os.path.join(directory, TASK_FILE)} to load it as it is)")


def _corrupt(path: str, e: BaseException) -> ModelError:
    return ModelError(f"{path}: cannot read these weights ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                      f": the file is truncated or corrupt; copy or save it again")


def read_safetensors(path: str, device: str = "cpu") -> dict[str, torch.Tensor]:
    """`safetensors.torch.load_file`, with a truncated or corrupt file as one ModelError naming it."""
    try:
        return load_file(path, device=device)
    except (SafetensorError, OSError) as e:
        raise _corrupt(path, e) from None


def read_weights(directory: str) -> dict[str, torch.Tensor]:
    """All tensors of a HuggingFace directory (single or sharded safetensors), or of one weights file.

    A `.bin`/`.pt` file (what the original bertorch saved) is read with weights_only=True: tensors only.
    """
    if os.path.isfile(directory):
        if directory.endswith(".safetensors"):
            return read_safetensors(directory)
        try:
            return torch.load(directory, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, EOFError, RuntimeError, OSError) as e:
            # not "use weights_only=False", as torch advises: an untrusted pickle must not run
            raise ModelError(f"{directory}: not a readable weights file of tensors "
                             f"({str(e).splitlines()[0]}): truncated, corrupt, or holding more than tensors") from None
    single = os.path.join(directory, WEIGHTS_NAME)
    if os.path.isfile(single):
        return read_safetensors(single)
    index = os.path.join(directory, WEIGHTS_INDEX_NAME)
    if os.path.isfile(index):
        state: dict[str, torch.Tensor] = {}
        for name in sorted(set(_read_index(index)["weight_map"].values())):
            state.update(read_safetensors(os.path.join(directory, name)))
        return state
    raise ModelError(f"{directory}: no model.safetensors found")


def load_tokenizer(name_or_path: str, flag: str | None = MODEL_FLAG):
    """AutoTokenizer, refused when it has nothing but special tokens (every character would be [UNK])."""
    check_model_path(name_or_path, flag)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise ModelError(f"{_named(name_or_path, flag)}: cannot load a tokenizer ({str(e).splitlines()[0]})") from None
    if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):
        raise ModelError(f"{_named(name_or_path, flag)}: its tokenizer has only the {len(tokenizer)} special tokens "
                         f"(no vocabulary file), so every character would be [UNK]; copy tokenizer.json or vocab.txt "
                         f"from the model this one was trained from")
    return tokenizer


def load_pretrained(auto_class: str, model_dir: str, **kwargs):
    """`transformers.<auto_class>.from_pretrained(model_dir)`, with weights that do not fit the directory's own
    config.json (a mixed or corrupt directory) as one ModelError."""
    import transformers

    if os.path.isdir(model_dir):
        check_weight_files(model_dir)
    try:
        return getattr(transformers, auto_class).from_pretrained(model_dir, **kwargs)
    except RuntimeError as e:
        if "mismatched" not in str(e) and "size mismatch" not in str(e):
            raise
        raise ModelError(f"{model_dir}: its weights do not fit its config.json (a tensor of another shape, e.g. a "
                         f"label head of another size): the directory mixes files of two models; save it again") from None
