#!/usr/bin/env bash
# Installs (once per machine) and starts the development Kafka-protocol broker on
# 127.0.0.1:9092, then prints the KAFKA_BROKERS value to use.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_broker
echo "KAFKA_BROKERS=$KAFKA_HOST:$KAFKA_PORT"
