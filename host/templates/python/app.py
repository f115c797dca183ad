"""A bgagents sub-agent in Python. Build it with `sh build.sh`, then run it
with `bgagents run team.yaml "some task"`."""

from wit_world import exports
from wit_world.exports.agent import Request
from wit_world.imports import output
from componentize_py_types import Err


class Agent(exports.Agent):
    def run(self, request: Request) -> str:
        """The returned text is the task's result; `raise Err(text)` is its
        failure reason. Any other exception traps the guest (its traceback
        is in the output)."""
        task = request.task.strip()
        if not any(character.isalpha() for character in task):
            raise Err("give me some text with letters to work on")
        # Live output: what `view` shows while the task runs.
        output.write(f"working on {len(task)} characters\n")
        words = len(task.split())
        return f"{words} words; reversed: {task[::-1]}"
