// node checks/generate.mjs BUNDLE_PARENT BUNDLE_NAME DTYPE PROMPT MAX_NEW_TOKENS
// Greedy continuation of PROMPT by an edgenlp text-generation bundle, loaded by transformers.js.
import { pipeline, env } from "@huggingface/transformers";

const [root, name, dtype, prompt, n] = process.argv.slice(2);
env.allowRemoteModels = false;
env.localModelPath = root;
const generate = await pipeline("text-generation", name, { dtype });
const [out] = await generate(prompt, { max_new_tokens: Number(n), do_sample: false, return_full_text: false });
console.log(JSON.stringify(out));
