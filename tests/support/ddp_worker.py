"""Run by torchrun in the DDP test: pretraining steps that record each rank's weights and data."""

import hashlib
import json
import os
import sys

import pretrain.__main__ as stage
from ssast.train.pretraining import PretrainUnit

records = []
original_step = PretrainUnit.step


def recording_step(self, model, batch, generator):
    weights = hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    records.append({"weights": weights, "paths": batch["path"]})
    return original_step(self, model, batch, generator)


PretrainUnit.step = recording_step
stage.main(["--config", *sys.argv[1:]])
with open(os.path.join(os.environ["RECORD_DIR"], f"rank{os.environ.get('RANK', 0)}.json"), "w") as f:
    json.dump(records, f)
