"""Run by torchrun in the DDP test: pretraining steps that record each rank's weights and data."""

import hashlib
import json
import os
import sys


import pretrain.__main__ as stage
from pretrain.config import PretrainConfig
from ssast.config import load_config
from ssast.pretraining import PretrainTask

records = []
original_step = PretrainTask.step


def recording_step(self, model, batch, generator):
    weights = hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    records.append({"weights": weights, "paths": batch["path"]})
    return original_step(self, model, batch, generator)


PretrainTask.step = recording_step
stage.run(load_config(PretrainConfig, sys.argv[1], sys.argv[2:]))
with open(os.path.join(os.environ["RECORD_DIR"], f"rank{os.environ['RANK']}.json"), "w") as f:
    json.dump(records, f)
