// Builds agent.js into {artifact}.wasm with componentize-js: npm run build
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

const { component } = await componentize({
  sourcePath: 'agent.js',
  witPath: 'wit',
  worldName: 'sub-agent',
  // bgagents provides WASI 0.2 but not wasi:http; without this the
  // component imports wasi:http/types and is refused at load.
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile('{artifact}.wasm', component);
console.log(`wrote {artifact}.wasm (${component.length} bytes)`);
