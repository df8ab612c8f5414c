// Compares a kiln token shard with js-tiktoken's encoding of the text it came
// from: kiln writes <|endoftext|> then the text's tokens.
// Usage: node compare-tiktoken.mjs ENCODING TEXT SHARD (ENCODING: gpt2,
// cl100k_base or o200k_base). Prints MATCH and the count, or the first
// difference with its context; exits 1 on a difference.
import fs from "node:fs";
import { getEncoding } from "js-tiktoken";

const [encoding, textPath, shardPath] = process.argv.slice(2);
const enc = getEncoding(encoding);
const text = fs.readFileSync(textPath, "utf8");
const eot = enc.encode("<|endoftext|>", "all");
const expected = [...eot, ...enc.encode(text, [], [])];
const buf = fs.readFileSync(shardPath);
const magic = buf.readInt32LE(0), version = buf.readInt32LE(4), count = buf.readInt32LE(8);
if (magic !== 20240520 || (version !== 1 && version !== 2)) {
  console.log(`not a token shard: magic ${magic}, version ${version}`);
  process.exit(1);
}
const got = [];
for (let i = 0; i < count; i++)
  got.push(version === 1 ? buf.readUInt16LE(1024 + 2 * i) : buf.readUInt32LE(1024 + 4 * i));
const n = Math.max(got.length, expected.length);
for (let i = 0; i < n; i++) {
  if (got[i] !== expected[i]) {
    const dec = (ids) => JSON.stringify(ids.map((t) => (t === undefined ? "?" : enc.decode([t]))));
    console.log(`MISMATCH at token ${i}: kiln ${got[i]}, tiktoken ${expected[i]}`);
    console.log(`  kiln:     ${dec(got.slice(Math.max(0, i - 5), i + 5))}`);
    console.log(`  tiktoken: ${dec(expected.slice(Math.max(0, i - 5), i + 5))}`);
    process.exit(1);
  }
}
console.log(`MATCH ${got.length} tokens (${Buffer.byteLength(text)} bytes of text), shard version ${version}`);
