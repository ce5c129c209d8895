#!/usr/bin/env node
// A `solc`-compatible command line over the npm `solc` package (the wasm build), for foundry-compilers.
//
// foundry-compilers runs `<solc> --version` and reads the last line as `Version: X`, then runs
// `<solc> --standard-json [--base-path P] [--allow-paths P] [--include-path P]` with the input on stdin
// and expects only JSON on stdout. The package's own `solcjs` CLI prints a non-JSON line first, so we
// drive its `compile` directly.
//
// Usage: solc-front.js <npm package name> [solc args...]   (see the `solc` and `solc-0.8.19` wrappers)
'use strict';
const fs = require('fs');
const path = require('path');

const [pkg, ...args] = process.argv.slice(2);
if (!pkg) {
  process.stderr.write('usage: solc-front.js <solc npm package> [--version | --standard-json ...]\n');
  process.exit(2);
}
const solc = require(path.join(__dirname, 'node_modules', pkg));

if (args.includes('--version')) {
  process.stdout.write('solc, the solidity compiler commandline interface (npm ' + pkg + ')\n');
  process.stdout.write('Version: ' + solc.version() + '\n');
  process.exit(0);
}
if (!args.includes('--standard-json')) {
  process.stderr.write('solc-front.js supports only --version and --standard-json\n');
  process.exit(2);
}

// Directories an import may be read from, as solc's own --base-path / --include-path would allow.
const roots = [];
for (let i = 0; i < args.length; i++) {
  if ((args[i] === '--base-path' || args[i] === '--include-path') && args[i + 1]) roots.push(args[++i]);
}
if (roots.length === 0) roots.push(process.cwd());

function findImports(importPath) {
  const candidates = path.isAbsolute(importPath) ? [importPath] : roots.map((r) => path.join(r, importPath));
  for (const file of candidates) {
    if (fs.existsSync(file)) return { contents: fs.readFileSync(file, 'utf8') };
  }
  return { error: 'File not found: ' + importPath + ' (searched ' + roots.join(', ') + ')' };
}

const input = fs.readFileSync(0, 'utf8');
process.stdout.write(solc.compile(input, { import: findImports }));
