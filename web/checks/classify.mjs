// node checks/classify.mjs BUNDLE_PARENT BUNDLE_NAME DTYPE '["text", ...]'
// Loads an edgenlp bundle with transformers.js exactly as an app would (local files only) and prints
// the top label and score of each text as JSON.
import { pipeline, env } from "@huggingface/transformers";

const [root, name, dtype, texts] = process.argv.slice(2);
env.allowRemoteModels = false;
env.localModelPath = root;
const classify = await pipeline("text-classification", name, { dtype });
const answers = [];
for (const text of JSON.parse(texts)) answers.push((await classify(text))[0]);
console.log(JSON.stringify(answers));
