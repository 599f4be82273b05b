#!/usr/bin/env bash
# `make run`: local InfluxDB (child of the gateway), the gateway with its
# embedded MQTT broker and NATS, and a small simulated fleet. Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
VEHICLES=${VEHICLES:-20}
CHARGERS=${CHARGERS:-4}
OCPP16=${OCPP16:-2}     # OCPP-0001.. speak OCPP 1.6J
OCPP201=${OCPP201:-2}   # the next ones speak OCPP 2.0.1
FLEET_KEY=${FLEET_KEY:-demo-fleet-key}
mkdir -p var
if [[ ! -f var/devices.yaml ]] || { [[ $((OCPP16 + OCPP201)) -gt 0 ]] && ! grep -q 'id: OCPP-0001' var/devices.yaml; }; then
  echo ">> provisioning $VEHICLES vehicles, $CHARGERS MQTT chargers and $OCPP16+$OCPP201 OCPP 1.6J+2.0.1 stations into var/devices.yaml"
  FLEETSIM_FLEET_KEY="$FLEET_KEY" bin/firmware-sim provision -vehicles "$VEHICLES" -chargers "$CHARGERS" \
    -ocpp16 "$OCPP16" -ocpp201 "$OCPP201" -out var/devices.yaml
fi

# Children run in their own sessions so that Ctrl-C reaches only this script,
# which then stops them in order: the fleet first (it waits for its last
# acks), then the gateway (listeners, spool drain, NATS drain, InfluxDB).
setsid bin/gateway -config deploy/gateway.dev.yaml &
GW=$!
SIM=
cleanup() {
  trap - INT TERM EXIT
  echo ">> stopping"
  if [[ -n "$SIM" ]]; then kill -INT "$SIM" 2>/dev/null || true; wait "$SIM" 2>/dev/null || true; fi
  kill -INT "$GW" 2>/dev/null || true
  wait "$GW" 2>/dev/null || true
  echo ">> stopped"
}
trap cleanup INT TERM EXIT

for _ in $(seq 1 120); do
  if curl -fsS http://127.0.0.1:8080/readyz >/dev/null 2>&1; then break; fi
  if ! kill -0 "$GW" 2>/dev/null; then echo "gateway exited"; exit 1; fi
  sleep 0.5
done

cat <<INFO

  telegate is running
  ─────────────────────────────────────────────────────────────────────────
  MQTT (TCP)        tcp://127.0.0.1:1883    MQTT over WebSocket  ws://127.0.0.1:1882
  OCPP 1.6J/2.0.1   ws://127.0.0.1:8887/ocpp/{id}   stations OCPP-0001.. ($OCPP16 × 1.6J, $OCPP201 × 2.0.1)
  Dashboard         http://127.0.0.1:8080/ui/   login demo / demo-telegate (operator), viewer / viewer-telegate
  Operations        http://127.0.0.1:8080/metrics  /healthz  /readyz
  InfluxDB 1.8      http://127.0.0.1:8086   bucket telemetry/autogen   (auth on: users and passwords
                    in var/influxdb/credentials.json, mode 0600; docs/operations.md)
  NATS (JetStream)  nats://127.0.0.1:4222   no anonymous access; operator user "ops":
    set -a; . var/gateway/nats/ops.env; set +a      (NATS_URL, NATS_USER, NATS_PASSWORD for the nats CLI)
    or: cp var/gateway/nats/ops-context.json ~/.config/nats/context/telegate.json; nats --context telegate ...
  Devices           var/devices.yaml (fleet key "$FLEET_KEY")

  Latest speed per vehicle (InfluxQL over the v1 query API, as the read-only user;
  the same request works on InfluxDB 1.8, 2.x with a DBRP mapping, and 3.x):
    R=\$(sed -n '/"reader"/,/}/s/.*"password": "\(.*\)".*/\1/p' var/influxdb/credentials.json)
    curl -s -G http://127.0.0.1:8086/query -H "Authorization: Token telegate_reader:\$R" \\
      --data-urlencode db=telemetry --data-urlencode rp=autogen \\
      --data-urlencode 'q=SELECT last("Vehicle.Speed") FROM "telemetry" WHERE time > now() - 5m GROUP BY "vin"'
  DTC events (nats CLI):   nats sub 'telemetry.dtc.>'            (after sourcing ops.env)
  Charging sessions:       nats sub 'charging.session.>'
  Streams, KV:             nats stream ls; nats kv get dtc_state <VIN>
  OCPP command (operator): log in to the dashboard, then POST /api/ocpp/stations/OCPP-0001/commands (docs/ocpp.md)

  Services API:            curl -s -H 'Authorization: Bearer dev-admin-token-change-me' http://127.0.0.1:8080/api/v1/customers
  Café partner triggers:   go run ./cmd/partner-example   (docs/services.md)

  Ctrl-C stops everything.
INFO

FLEETSIM_FLEET_KEY="$FLEET_KEY" setsid bin/firmware-sim run -broker tcp://127.0.0.1:1883 -vehicles "$VEHICLES" -chargers "$CHARGERS" \
  -ocpp-url ws://127.0.0.1:8887/ocpp -ocpp16 "$OCPP16" -ocpp201 "$OCPP201" &
SIM=$!
wait "$GW"
