"""The config of a post-training test run: the conftest's pretrained model tuned on the generated
tasks (lmx.data.synth) on one device."""

from lmx.config import Config


def post_config(
    pretrain_cfg: Config, kind: str, init_from, files: str, synth, steps: int, lr: float, **extra
) -> Config:
    return pretrain_cfg.replace(
        **{
            "name": kind,
            "mesh.data": 1,
            "mesh.fsdp": 1,
            "mesh.tensor": 1,
            "data.seq_len": 32,  # the tasks' prompts and answers fit in 32 tokens
            "optim.learning_rate": lr,
            "optim.warmup_steps": 20,
            "optim.schedule": "cosine",
            "optim.weight_decay": 0.0,
            "train.steps": steps,
            "train.batch_size": 32,
            "eval.every_steps": steps // 4,
            "eval.batches": 4,
            "eval.final_batches": 0,
            "checkpoint.every_steps": 0,
            "log.every_steps": 50,
            "objective.kind": kind,
            "objective.init_from": str(init_from),
            "objective.train_files": str(synth[f"{files}_train"]),
            "objective.eval_files": str(synth[f"{files}_heldout"]),
            **extra,
        }
    )
