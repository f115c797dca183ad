// A bgagents sub-agent in JavaScript. Build it with `npm install && npm run
// build`, then run it with `bgagents run team.yaml "some task"`.
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
  // request: { taskId, agent, instruction, task, expectedOutput, subAgents,
  //            description, date, maxIterations }
  // A returned string is the task's result; a thrown exception its failure.
  run: failingWithReason((request) => {
    const task = request.task.trim();
    const letters = [...task].filter((c) => c.toLowerCase() !== c.toUpperCase());
    if (letters.length === 0) throw new Error('give me some text with letters to work on');
    // Live output: what `view` shows while the task runs.
    write(`working on ${task.length} characters\n`);
    const words = task.split(/\s+/).length;
    return `${words} words; reversed: ${[...task].reverse().join('')}`;
  }),
};
