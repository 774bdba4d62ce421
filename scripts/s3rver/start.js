// Starts @20minutes/s3rver (its package has no bin script). Run with
// `node --openssl-legacy-provider start.js -d DIR -a 127.0.0.1 -p PORT ...`.
require('@20minutes/s3rver/lib/cli').parseAsync(process.argv).catch((e) => { console.error(e); process.exit(1) })
