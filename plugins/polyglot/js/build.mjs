// Builds agent.js into a component: node build.mjs [source.js] [out.wasm]
// The WIT is the repository's wit/ folder.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const sourcePath = process.argv[2] ? resolve(process.argv[2]) : here('./agent.js');
const out = process.argv[3] ? resolve(process.argv[3]) : here('./shouter.wasm');

const started = Date.now();
const { component } = await componentize({
  sourcePath,
  witPath: here('../../../wit'),
  worldName: 'sub-agent',
  // bgagents provides WASI 0.2 but not wasi:http; without this the
  // component would import wasi:http/types and be refused at load.
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
console.log(`wrote ${out}: ${component.length} bytes in ${Date.now() - started} ms`);
