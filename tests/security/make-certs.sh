#!/usr/bin/env bash
# Makes the certificates of the TLS tests with the openssl CLI, into DIR:
#   ca.pem ca.key            the job's CA
#   server.pem server.key    a shard: CN dcasgd-ps, SAN localhost, 127.0.0.1,
#                            dcasgd-ps and the chart's per-shard names of release
#                            dcasgd in namespace default (the container test),
#                            signed by ca
#   worker.pem worker.key    a client: CN worker-client, signed by ca
#   reader.pem reader.key    a client: CN reader-client, signed by ca
#   other-ca.pem other-ca.key    an unrelated CA
#   other-server.pem other-server.key  a shard certificate signed by other-ca
#   other-client.pem other-client.key  a client certificate signed by other-ca
# ECDSA P-256 keys (made in milliseconds, unlike RSA), valid 2 days: enough
# for a test run, useless afterwards.
# Usage: tests/security/make-certs.sh DIR
set -euo pipefail
dir="$1"
mkdir -p "$dir"
cd "$dir"

ca() {  # name cn
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=$2" \
    -keyout "$1.key" -out "$1.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
}

leaf() {  # name cn ca extensions
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial -days 2 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

server_ext='subjectAltName=DNS:localhost,DNS:dcasgd-ps,IP:127.0.0.1,DNS:*.dcasgd-ps-headless.default.svc.cluster.local
extendedKeyUsage=serverAuth'
client_ext='extendedKeyUsage=clientAuth'

ca ca dcasgd-test-ca
ca other-ca other-test-ca
leaf server dcasgd-ps ca "$server_ext"
leaf worker worker-client ca "$client_ext"
leaf reader reader-client ca "$client_ext"
leaf other-server dcasgd-ps other-ca "$server_ext"
leaf other-client worker-client other-ca "$client_ext"
chmod 600 ./*.key
