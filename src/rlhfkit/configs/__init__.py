"""The typed configuration of every command, one module each: the keys of `--set`, config files and config.yaml.

`rlhfkit.config` is the loader (`field`, `load_config`) and holds the sections many commands share
(`ModelConfig`, `GenerationConfig`, `RewardConfig`, `LoRAConfig`); `common` holds the schedule, the
held-out data and the runtime sections of the trainers. A recipe imports its command's module here
and holds only its steps.
"""
