// JavaScript `shouter` worker for the bgagents `sub-agent` world.
import { write } from 'bgagents:agents/output@0.1.0';

export const agent = {
  // request: { taskId, agent, instruction, task, expectedOutput: string | undefined, subAgents: string[] }
  run(request) {
    const text = request.task.trim();
    if (text === '') {
      // result<string, string>: return { tag: 'err', val } (or `throw 'text'`;
      // NOT `throw new Error(...)`, which traps the guest instead).
      return { tag: 'err', val: 'the task is empty: give me something to shout' };
    }
    write(`shouting ${[...text].length} characters\n`);
    return `${text.toUpperCase()}!`; // a plain returned value becomes ok(value)
  },
};
