"""Registers the scripted environments (see gym_scripted_envs.py for why they live there)."""

import gym_scripted_envs  # noqa: F401  (registers RlhfkitTest/*)
