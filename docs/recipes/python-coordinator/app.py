"""Counts the words of a text, one sub-agent task per sentence. The same
component is coordinator and counter: with sub-agents to dispatch it
coordinates, without it counts."""

from wit_world import exports
from wit_world.exports.agent import Request
from wit_world.imports import background_agents as toolset, output
from wit_world.imports.types import TaskStatus
from componentize_py_types import Err


class Agent(exports.Agent):
    def run(self, request: Request) -> str:
        if not request.sub_agents:  # the counter
            return str(len(request.task.split()))
        counter = request.sub_agents[0]
        sentences = [s.strip() for s in request.task.split(".") if s.strip()]
        if not sentences:
            raise Err("nothing to count")  # the task fails with this reason
        output.write(f"counting {len(sentences)} sentence(s) in parallel\n")
        ids = []
        for sentence in sentences:
            try:
                info = toolset.run_background_agent(counter, sentence, None)
            except Err as error:  # an import's err, its text in .value
                raise Err(f"cannot start {counter}: {error.value}")
            ids.append(info.id)
        # Wait for all before returning: `bgagents run` stops whatever is
        # still running when its agent returns.
        while not toolset.wait_background_agents(ids, 60).all_done:
            pass
        total = 0
        for task_id in ids:
            view = toolset.view_background_agent(task_id)
            if view.info.status != TaskStatus.COMPLETED:
                raise Err(f"{task_id} {view.info.status.name.lower()}: {view.error}")
            total += int(view.result or "0")
        return f"{total} words in {len(sentences)} sentences"  # the task's result
