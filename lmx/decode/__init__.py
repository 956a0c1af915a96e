"""Decoding with a KV cache: sampling rules, the streaming generator (`lmx generate`) and batched
rollouts compiled as one loop (online RL). Below the objectives, so that an objective can sample
from the policy it trains."""
