#!/usr/bin/env bash
# Token-level distillation: scripts/distill.sh with TASK=ner (Resume NER, BERT+CRF teacher NER_TEACHER).
NAME=${NAME:-distill_ner} TASK=ner exec bash "$(dirname "$0")/distill.sh" "$@"
