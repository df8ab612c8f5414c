// Compares a kiln token shard with js-tiktoken's gpt2 encoding of the text it
// came from: kiln writes <|endoftext|> (50256) then the text's tokens.
// Usage: node compare-tiktoken.mjs TEXT SHARD. Prints MATCH and the count, or
// the first difference with its context; exits 1 on a difference.
import fs from "node:fs";
import { getEncoding } from "js-tiktoken";

const [textPath, shardPath] = process.argv.slice(2);
const text = fs.readFileSync(textPath, "utf8");
const expected = [50256, ...getEncoding("gpt2").encode(text, [], [])];
const buf = fs.readFileSync(shardPath);
const magic = buf.readInt32LE(0), version = buf.readInt32LE(4), count = buf.readInt32LE(8);
if (magic !== 20240520 || version !== 1) {
  console.log(`not a version-1 token shard: magic ${magic}, version ${version}`);
  process.exit(1);
}
const got = [];
for (let i = 0; i < count; i++) got.push(buf.readUInt16LE(1024 + 2 * i));
const n = Math.max(got.length, expected.length);
for (let i = 0; i < n; i++) {
  if (got[i] !== expected[i]) {
    console.log(`MISMATCH at token ${i}: kiln ${got[i]}, tiktoken ${expected[i]}`);
    console.log(`  kiln:     ${JSON.stringify(got.slice(Math.max(0, i - 5), i + 5))}`);
    console.log(`  tiktoken: ${JSON.stringify(expected.slice(Math.max(0, i - 5), i + 5))}`);
    process.exit(1);
  }
}
console.log(`MATCH ${got.length} tokens (${Buffer.byteLength(text)} bytes of text)`);
