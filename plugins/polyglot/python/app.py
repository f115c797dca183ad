"""Python coordinator for the bgagents `sub-agent` world.

Splits its task on newlines or ';', dispatches each part to one of its
sub_agents in the background (`name: text` goes to `name` when it is a
sub-agent, other parts round-robin), waits for all, and combines the results.
"""

import re

from wit_world import exports
from wit_world.exports.agent import Request
from wit_world.imports import background_agents as toolset
from wit_world.imports import output
from wit_world.imports.types import TaskStatus
from componentize_py_types import Err


def split_parts(task: str) -> list[str]:
    return [part.strip() for part in re.split(r"[\n;]", task) if part.strip()]


def route(part: str, sub_agents: list[str], index: int) -> tuple[str, str]:
    name, sep, text = part.partition(":")
    if sep and name.strip() in sub_agents:
        return name.strip(), text.strip()
    return sub_agents[index % len(sub_agents)], part


class Agent(exports.Agent):
    def run(self, request: Request) -> str:
        if not request.sub_agents:
            raise Err(
                "this coordinator has no sub_agents to dispatch; list some in "
                "the team file and grant it the background_agents toolset"
            )
        parts = split_parts(request.task)
        if not parts:
            raise Err("the task has no parts to dispatch")
        output.write(f"dispatching {len(parts)} part(s) in parallel\n")

        dispatched = []
        for index, part in enumerate(parts):
            agent, text = route(part, request.sub_agents, index)
            try:
                # option<string> -> Optional[str]: pass None for `none`.
                info = toolset.run_background_agent(agent, text, None)
            except Err as error:  # result<_, string> err -> Err, message in .value
                raise Err(f"cannot start {agent}: {error.value}")
            output.write(f"  {info.id} <- {agent}: {text}\n")
            dispatched.append((agent, text, info.id))

        ids = [task_id for _, _, task_id in dispatched]
        while True:
            report = toolset.wait_background_agents(ids, 0)  # Err propagates as run's err
            if report.all_done:
                break
            output.write("still waiting for sub-agents...\n")
        output.write("all parts finished; combining\n")

        combined = ""
        failures = 0
        for agent, text, task_id in dispatched:
            view = toolset.view_background_agent(task_id)
            combined += f"## {agent}: {text}\n"
            if view.info.status == TaskStatus.COMPLETED:
                combined += view.result or ""
            else:
                failures += 1
                combined += f"({view.info.status.name.lower()}) {view.error or ''}"
            combined += "\n\n"
        if failures == len(dispatched):
            raise Err(f"every part failed:\n{combined}")
        return combined.rstrip()
