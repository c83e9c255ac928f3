// Runs the reference GPT-2 encoder (npm gpt-3-encoder, Encoder.js) on a file read as UTF-8
// and prints the ids space-separated on one line, as `cairn data encode` does.
// usage: node tokenizer_reference.js <dir with Encoder.js> <file>
// With CAIRN_REF_TIME=1 it also prints "encode_ms <ms>" (encoding only) on stderr.
const fs = require('fs');
const path = require('path');

if (process.argv.length !== 4) {
  console.error('usage: node tokenizer_reference.js <tokenizer dir> <file>');
  process.exit(2);
}
const { encode } = require(path.resolve(process.argv[2], 'Encoder.js'));
const text = fs.readFileSync(process.argv[3], 'utf-8');
const t0 = process.hrtime.bigint();
const ids = encode(text);
const ms = Number(process.hrtime.bigint() - t0) / 1e6;
if (process.env.CAIRN_REF_TIME === '1') console.error('encode_ms ' + ms.toFixed(1));
process.stdout.write(ids.join(' ') + '\n');
