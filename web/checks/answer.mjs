// node checks/answer.mjs BUNDLE_PARENT BUNDLE_NAME DTYPE '[{"question": ..., "context": ...}, ...]'
// Loads an edgenlp question-answering bundle with transformers.js's pipeline exactly as an app would
// (local files only) and prints each answer: {answer, score}.
import { pipeline, env } from "@huggingface/transformers";

const [root, name, dtype, questions] = process.argv.slice(2);
env.allowRemoteModels = false;
env.localModelPath = root;
const answer = await pipeline("question-answering", name, { dtype });
const out = [];
for (const { question, context } of JSON.parse(questions)) {
  const found = await answer(question, context);
  out.push({ answer: found.answer, score: found.score });
}
console.log(JSON.stringify(out));
