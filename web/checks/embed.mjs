// node checks/embed.mjs BUNDLE_PARENT BUNDLE_NAME DTYPE POOLING NORMALIZE '["text", ...]'
// Loads an edgenlp embedding bundle with transformers.js's feature-extraction pipeline exactly as an app
// would (local files only, the pooling the manifest names) and prints each text's vector as JSON.
import { pipeline, env } from "@huggingface/transformers";

const [root, name, dtype, pooling, normalize, texts] = process.argv.slice(2);
env.allowRemoteModels = false;
env.localModelPath = root;
const embed = await pipeline("feature-extraction", name, { dtype });
const vectors = [];
for (const text of JSON.parse(texts)) {
  const out = await embed(text, { pooling, normalize: normalize === "true" });
  vectors.push(Array.from(out.data));
}
console.log(JSON.stringify(vectors));
