// JavaScript `shouter` worker for the bgagents `sub-agent` world.
import { write } from 'bgagents:agents/output@0.2.0';

// Turns an exception thrown by `run` into the task's failure reason, with
// its message and stack. Without it an `Error` thrown out of `run` traps the
// guest and its message is lost.
function failingWithReason(run) {
  return (request) => {
    try {
      return run(request);
    } catch (error) {
      // An import's err arrives as an error whose payload is the text.
      if (typeof error?.payload === 'string') return { tag: 'err', val: error.payload };
      if (error instanceof Error) {
        const kind = error.name === 'Error' ? '' : `${error.name}: `;
        const stack = (error.stack ?? '').trim();
        return { tag: 'err', val: `${kind}${error.message}${stack ? `\n${stack}` : ''}` };
      }
      return { tag: 'err', val: String(error) };
    }
  };
}

export const agent = {
  // request: { taskId, agent, instruction, task, expectedOutput: string | undefined, subAgents: string[] }
  // A returned value becomes ok(value); a thrown exception err(message and stack).
  run: failingWithReason((request) => {
    const text = request.task.trim();
    if (text === '') throw new Error('the task is empty: give me something to shout');
    if (text.length > 1000) throw new RangeError(`${text.length} characters is too long to shout`);
    write(`shouting ${[...text].length} characters\n`);
    return `${text.toUpperCase()}!`;
  }),
};
