#!/usr/bin/env bash
# softhsm-init.sh: initialise a SoftHSM2 token for a dicom-vault deployment.
#
# Creates a private SoftHSM2 configuration and token directory (mode 0700)
# and initialises one token in it for the pkcs11 key provider. It does not
# create keys: the provider generates its first KEK (<prefix>-v1) and MAC keys
# inside the token on first use, non-extractable.
#
# Usage:
#   DICOM_VAULT_HSM_USER_PIN=... DICOM_VAULT_HSM_SO_PIN=... \
#       infra/softhsm-init.sh [--dir DIR] [--label LABEL] [--module PATH]
#
#   --dir DIR       where softhsm2.conf and tokens/ go (default /var/lib/dicom-vault/softhsm)
#   --label LABEL   token label (default dicom-vault); Pkcs11KeySettings.token_label
#   --module PATH   PKCS#11 module (default /usr/lib/softhsm/libsofthsm2.so)
#
# The PINs come from the environment, not from arguments, to keep them out of
# shell history; both must be at least 4 characters. softhsm2-util itself
# takes them on its command line, visible to local users for the moment it
# runs: initialise on a host where that is acceptable, or as the service user
# on a dedicated machine. Run it as the user the service runs as, so the token
# files belong to that user.
#
# Idempotent: a token that already carries LABEL is left as it is.
#
# On success it prints the environment the service needs, e.g.:
#   SOFTHSM2_CONF=/var/lib/dicom-vault/softhsm/softhsm2.conf
#   DICOM_VAULT_KEYS__PROVIDER=pkcs11
#   DICOM_VAULT_KEYS__PKCS11__MODULE=/usr/lib/softhsm/libsofthsm2.so
#   DICOM_VAULT_KEYS__PKCS11__TOKEN_LABEL=dicom-vault
# (the user PIN goes in DICOM_VAULT_KEYS__PKCS11__USER_PIN, from a secret store).
#
# Exit status: 0 on success, 2 on a usage error, 1 if softhsm2-util fails.
set -euo pipefail

dir=/var/lib/dicom-vault/softhsm
label=dicom-vault
module=/usr/lib/softhsm/libsofthsm2.so

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dir) dir=${2:?--dir needs a value}; shift 2 ;;
        --label) label=${2:?--label needs a value}; shift 2 ;;
        --module) module=${2:?--module needs a value}; shift 2 ;;
        -h|--help) usage ;;
        *) echo "softhsm-init: unknown argument: $1" >&2; usage ;;
    esac
done

user_pin=${DICOM_VAULT_HSM_USER_PIN:-}
so_pin=${DICOM_VAULT_HSM_SO_PIN:-}
if [[ ${#user_pin} -lt 4 || ${#so_pin} -lt 4 ]]; then
    echo "softhsm-init: set DICOM_VAULT_HSM_USER_PIN and DICOM_VAULT_HSM_SO_PIN (4+ characters)" >&2
    exit 2
fi
command -v softhsm2-util >/dev/null || { echo "softhsm-init: softhsm2-util not found (apt install softhsm2)" >&2; exit 1; }
[[ -r $module ]] || { echo "softhsm-init: PKCS#11 module not found: $module" >&2; exit 1; }

umask 077
mkdir -p "$dir/tokens"
chmod 700 "$dir" "$dir/tokens"
conf="$dir/softhsm2.conf"
if [[ ! -e $conf ]]; then
    cat >"$conf" <<EOF
# SoftHSM2 configuration for dicom-vault (written by infra/softhsm-init.sh)
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
fi
export SOFTHSM2_CONF=$conf

token_present() {
    softhsm2-util --module "$module" --show-slots |
        awk -v want="$label" '$1 == "Label:" { sub(/^[[:space:]]*Label:[[:space:]]*/, ""); sub(/[[:space:]]+$/, ""); if ($0 == want) found = 1 } END { exit !found }'
}

if token_present; then
    echo "softhsm-init: token '$label' already initialised; left unchanged" >&2
else
    softhsm2-util --module "$module" --init-token --free --label "$label" \
        --pin "$user_pin" --so-pin "$so_pin" >/dev/null
    echo "softhsm-init: token '$label' initialised" >&2
fi

cat <<EOF
SOFTHSM2_CONF=$conf
DICOM_VAULT_KEYS__PROVIDER=pkcs11
DICOM_VAULT_KEYS__PKCS11__MODULE=$module
DICOM_VAULT_KEYS__PKCS11__TOKEN_LABEL=$label
EOF
