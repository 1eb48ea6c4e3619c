#!/usr/bin/env node
// The `vlmkit` command (package.json "bin"): runs the compiled CLI in dist/cli/main.js
// (`npm run build` compiles ts/ into dist/). In a source checkout without a build,
// `npx tsx ts/cli/main.ts` runs the same CLI from the TypeScript sources.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write(`vlmkit: the compiled CLI is missing (${fileURLToPath(entry)}); run 'npm run build' in the package folder, or use 'npx tsx ts/cli/main.ts'\n`);
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
