# Sourced by the scripts: default data root = ../shared/data beside the checkout, if present.
if [ -z "${METALAB_DATA:-}" ] && [ -d "$(pwd)/../shared/data" ]; then
  export METALAB_DATA="$(cd "$(pwd)/../shared/data" && pwd)"
fi
