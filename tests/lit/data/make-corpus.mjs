// Writes the tokenizer parity corpus to stdout: ~250 KB of English from the
// fortunes package (when installed) followed by generated text that stresses
// the pre-tokenizers of gpt2, cl100k_base and o200k_base: contractions in any
// case, whitespace runs (spaces, tabs, CR, LF, no-break and ideographic
// spaces, U+FEFF and U+0085, where JavaScript's \s and Unicode's differ),
// numbers of several scripts and lengths, accents and combining marks after
// upper and lower case letters, camelCase and ALLCAPS words, title-case and
// modifier letters, paths, CJK, emoji, Cyrillic, Greek, Arabic, Hebrew,
// Devanagari; then code-point soup drawn from one character of each class,
// and a few pieces thousands of bytes long.
// Only characters assigned by Unicode 14 are used, so the reference is the
// same under any Node.js (Debian 12's is Unicode 15, newer ones 16 or 17).
// Deterministic (a fixed linear congruential generator).
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
  "DON'T", "I'M", "WE'LL", "They'RE", "it'S", "'Ll", "'VE", "camelCaseWord", "HTTPServer",
  "XMLHttpRequest", "iPhone", "McDonald's", "ÉCOLE", "E\u0301cole", "A\u0301B\u0301c", "ǅemal",
  "ǈubljana", "ʰaʰ", "Straße", "ΣΊΣΥΦΟΣ", "1234567", "3.14159265", "12,345.67", "0x1F8B",
  "/usr/share/dict", "a/b/c/", "http://example.com/x?y=1", "x\r\n\r\ny", "\u0085", "\ufeff",
  "ab\u0085cd", "q\ufeff r", "\u0301\u0301x", "\u0903", "क्षत्रिय", "ﬁnance", "ｶﾀｶﾅ", "カタカナ",
];
const spaces = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000",
                "\u2009", "\u2003", "\u202f", "\t\t ", "      \n"];
let generated = "";
while (generated.length < 60000) {
  generated += pieces[rand(pieces.length)];
  generated += rand(3) === 0 ? spaces[rand(spaces.length)] : " ";
}
// Code-point soup: pieces of random length from an alphabet with members of
// every class the patterns test.
const alphabet = [
  "a", "z", "A", "Z", "é", "É", "ǅ", "ʰ", "中", "ー", "\u0301", "\u0903", "\u20dd", "1", "٣",
  "²", "Ⅻ", " ", "  ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u2009", "\u3000", "\u0085",
  "\ufeff", "'", "'s", "'S", "'ll", "'LL", "/", "!", "?", ".", ",", "-", "_", "😀", "\u200d",
];
let soup = "";
while (soup.length < 30000) {
  const len = 1 + rand(12);
  for (let k = 0; k < len; k++) soup += alphabet[rand(alphabet.length)];
  soup += rand(4) === 0 ? "\n" : " ";
}
// Long pieces, where byte-pair merging does thousands of merges in one piece.
const long = "x" + " ".repeat(3000) + "y\n" + "=".repeat(2000) + "\n" + "ACGT".repeat(800) +
  " " + "ab".repeat(1500) + "\n" + "9".repeat(1000) + "\n";
process.stdout.write(text + "\n" + generated + "  \n\n   " + soup + long);
