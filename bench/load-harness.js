'use strict';
// Lets the bench's plain-Node scripts require the project's TypeScript test harness
// (test/harness/*.ts): ts-node is not installed, so each module is transpiled on require with the
// project's own typescript; __dirname stays the harness's, so its relative paths hold.
const fs = require('node:fs');
const ts = require('typescript');

require.extensions['.ts'] = (module, filename) => {
  const { outputText } = ts.transpileModule(fs.readFileSync(filename, 'utf8'), {
    fileName: filename,
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
  });
  module._compile(outputText, filename);
};
