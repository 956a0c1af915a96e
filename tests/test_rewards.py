"""Rewards for online RL (lmx.objectives.rewards): the built-ins on the generated tasks, weights,
and a user's function from a file, with its errors as one line naming it."""

import numpy as np
import pytest

from lmx.errors import ConfigError, DataError
from lmx.objectives.rewards import Rewards, load_reward, reward_names

PROMPTS = ["copy 3 1 4", "sort 3 1 4", "add 12 7", "reverse 5 6"]
META = [{"answer": "3 1 4"}, {"answer": "1 3 4"}, {"answer": "19"}, {"answer": "6 5"}]
COMPLETIONS = [" 3 1 4\n", "1 4 3", "19", "6 5 5"]


def test_built_in_rewards_score_the_generated_tasks():
    assert {"exact_match", "partial_credit", "format"} <= set(reward_names())
    assert list(load_reward("exact_match")(PROMPTS, COMPLETIONS, META)) == [1.0, 0.0, 1.0, 0.0]
    # partial credit: items right at their place over the longer list (an extra item costs).
    assert list(load_reward("partial_credit")(PROMPTS, COMPLETIONS, META)) == pytest.approx([1.0, 1 / 3, 1.0, 2 / 3])
    assert list(load_reward("format")(PROMPTS, [*COMPLETIONS, "three", "1, 2", ""], META * 2)) == [1.0] * 4 + [0.0] * 3


def test_weights_combine_and_each_reward_is_reported():
    rewards = Rewards((("exact_match", 1.0), ("format", 0.25)))
    total, each = rewards.score(PROMPTS, COMPLETIONS, META)
    np.testing.assert_allclose(each["exact_match"], [1, 0, 1, 0])
    np.testing.assert_allclose(total, [1.25, 0.25, 1.25, 0.25])


def test_a_user_reward_from_a_file_and_its_errors(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(
        "import numpy as np\n"
        "def brevity(prompts, completions, metadata):\n"
        "    return np.array([1.0 / (1 + len(c.split())) for c in completions])\n"
        "def broken(prompts, completions, metadata):\n"
        "    return {}['missing']\n"
        "def short(prompts, completions, metadata):\n"
        "    return [1.0]\n"
        "def not_finite(prompts, completions, metadata):\n"
        "    return [float('nan')] * len(completions)\n"
    )
    total, _ = Rewards(((f"{path}:brevity", 2.0),)).score(PROMPTS, COMPLETIONS, META)
    np.testing.assert_allclose(total, [2 / 4, 2 / 4, 2 / 2, 2 / 4])
    with pytest.raises(DataError, match=r"reward '.*my_rewards\.py:broken' raised KeyError: 'missing'"):
        Rewards(((f"{path}:broken", 1.0),)).score(PROMPTS, COMPLETIONS, META)
    for name in ("short", "not_finite"):
        with pytest.raises(DataError, match=f"{name}' must return one finite number per completion \\(4\\)"):
            Rewards(((f"{path}:{name}", 1.0),)).score(PROMPTS, COMPLETIONS, META)
    with pytest.raises(ConfigError, match="defines no function 'absent'"):
        Rewards(((f"{path}:absent", 1.0),))
    with pytest.raises(ConfigError, match="not one of exact_match, format, partial_credit"):
        Rewards((("exactmatch", 1.0),))
    (tmp_path / "bad.py").write_text("raise RuntimeError('at import')\n")
    with pytest.raises(ConfigError, match="importing .*bad.py failed: RuntimeError: at import"):
        Rewards(((f"{tmp_path / 'bad.py'}:f", 1.0),))
    with pytest.raises(DataError, match="prompt 0 has no 'answer'"):
        Rewards((("exact_match", 1.0),)).score(["p"], ["c"], [{}])
