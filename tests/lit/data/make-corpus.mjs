// Writes the tokenizer parity corpus to stdout: ~250 KB of English from the
// fortunes package (when installed) followed by generated text that stresses
// GPT-2's pre-tokenizer: contractions, whitespace runs (spaces, tabs, CR, LF,
// no-break and ideographic spaces), numbers of several scripts, accents and
// combining marks, CJK, emoji, Cyrillic, Greek, Arabic, Hebrew, Devanagari.
// Deterministic (a fixed linear congruential generator). U+0085 and U+FEFF
// are left out: JavaScript's \s and tiktoken's disagree on them.
import fs from "node:fs";
import path from "node:path";

let text = "";
const dir = "/usr/share/games/fortunes";
if (fs.existsSync(dir)) {
  for (const name of fs.readdirSync(dir).sort()) {
    if (name.endsWith(".dat") || name.endsWith(".u8")) continue;
    const file = path.join(dir, name);
    if (!fs.statSync(file).isFile()) continue;
    text += fs.readFileSync(file, "utf8");
    if (text.length > 250000) break;
  }
}

let seed = 12345;
const rand = (n) => {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed % n;
};
const pieces = [
  "I'll", "you've", "we'd", "they're", "it's", "don't", "can't", "I'M", "o'clock", "'s", "''",
  "rock'n'roll", " 's", "y'all'd've", "hello", "Hello", "HELLO", "naïve", "café", "façade",
  "e\u0301", "a\u0308\u0301", "Ω", "λόγος", "Москва", "привет", "مرحبا", "שלום", "नमस्ते",
  "日本語", "中文字符", "한국어", "ｆｕｌｌｗｉｄｔｈ", "😀", "👩‍💻", "🇫🇷", "✓", "→", "∑", "€100",
  "$3.14", "1,000,000", "٣٤٥", "१२३", "²³", "Ⅻ", "½", "42", "2024-05-20", "C++", "x_y", "a/b",
  "<|endoftext|>", "...", "!!!", "?!", "--", "#!", "@@", "~~~", "(", ")", "[", "]", "{", "}",
  "\"quoted\"", "«guillemets»", "“curly”", "‘single’", "—", "–", "…", "•", "\\", "`",
];
const spaces = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000",
                "\u2009", "\u2003", "\u202f", "\t\t ", "      \n"];
let generated = "";
while (generated.length < 60000) {
  generated += pieces[rand(pieces.length)];
  generated += rand(3) === 0 ? spaces[rand(spaces.length)] : " ";
}
process.stdout.write(text + "\n" + generated + "  \n\n   ");
