// The reference side of bench/tokenize.sh: js-tiktoken encoding a text file
// (read before the clock starts), in documents split on lines equal to SPLIT
// when given (as kiln tokenize --split-on), else as one text. Prints
// "js-tiktoken ENCODING MB/s TOKENS".
// Usage: node tokenize-js.mjs ENCODING FILE [SPLIT]
import fs from "node:fs";
import { getEncoding } from "js-tiktoken";

const [encoding, file, split] = process.argv.slice(2);
const enc = getEncoding(encoding);
const text = fs.readFileSync(file, "utf8");
const docs = split ? text.split(new RegExp(`^${split}\\r?(?:\\n|$)`, "m")) : [text];
const start = process.hrtime.bigint();
let tokens = 0;
for (const d of docs) if (d.trim()) tokens += 1 + enc.encode(d, [], []).length;
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
const mb = Buffer.byteLength(text) / 1e6;
console.log(`js-tiktoken ${encoding} ${(mb / seconds).toFixed(2)} ${tokens}`);
