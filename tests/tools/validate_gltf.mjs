// Runs the Khronos glTF validator (npm "gltf-validator", pinned in package.json) on the
// GLB/glTF bytes read from stdin and prints its JSON report on stdout.
// Usage: node validate_gltf.mjs [name-for-the-report] < model.glb
import validator from "gltf-validator";

const chunks = [];
for await (const chunk of process.stdin) {
  chunks.push(chunk);
}
const bytes = new Uint8Array(Buffer.concat(chunks));
const report = await validator.validateBytes(bytes, {
  uri: process.argv[2] ?? "model.glb",
  maxIssues: 200,
  // an embedded GLB has no external resources; refuse rather than read the disk
  externalResourceFunction: (uri) => Promise.reject(new Error(`external resource ${uri}`)),
});
process.stdout.write(JSON.stringify(report));
