// node checks/tag.mjs BUNDLE_PARENT BUNDLE_NAME DTYPE '["text", ...]'
// Loads an edgenlp token-classification bundle with transformers.js's pipeline exactly as an app would
// (local files only) and prints, per text, every token tagged other than O: {entity, score, index}.
import { pipeline, env } from "@huggingface/transformers";

const [root, name, dtype, texts] = process.argv.slice(2);
env.allowRemoteModels = false;
env.localModelPath = root;
const tag = await pipeline("token-classification", name, { dtype });
const out = [];
for (const text of JSON.parse(texts)) {
  const tokens = await tag(text, { ignore_labels: ["O"] });
  out.push(tokens.map(({ entity, score, index }) => ({ entity, score, index })));
}
console.log(JSON.stringify(out));
