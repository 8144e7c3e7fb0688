"""The online preference loop (`rlhfkit loop`): rounds of sampling, query selection, labels, reward model, PPO.

- `config`        the loop's keys (`LoopConfig`) and one round's reward-model run (`EnsembleRMConfig`)
- `selection`     which pairs to label: ensemble disagreement or random; the heads' bootstrap weights
- `labels`        the judge and AI-judge labellers
- `server`        people as labellers: a running `rlhfkit label serve`, driven through its admin API
- `reward_model`  one round's reward-model ensemble, on the run skeleton
- `policy`        PPO continued round after round, with the ensemble's spread logged
- `rounds`        the stages of a round, resumable, and summary.json
"""
