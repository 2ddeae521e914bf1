#!/usr/bin/env bash
# Checks a deployment end to end, layer by layer, and exits non-zero on any
# failure. Usage text: ./VERIFY_SMS_BRIDGE.sh --help
set -uo pipefail

usage() {
  cat <<'EOF'
Usage: ./VERIFY_SMS_BRIDGE.sh [BASE_URL] [--live] [--platform vapi|retell|elevenlabs]

Checks a deployment of the clinic voice tools layer by layer and prints one
PASS/FAIL line each: auth, org check, SMS credentials, provider reachability,
webhook URLs (reachable, refusing unsigned requests, accepting a request
signed as the provider signs it), booking (Vapi and legacy shapes), idempotent
replay, smsStatus. Exits non-zero on any failure.

  BASE_URL        default http://localhost:3000
  --live          send the confirmation SMS through the clinic's real
                  providers (needs VERIFY_PHONE); default is a dry run
  --platform P    which door to check the tools through: vapi (default),
                  retell (signed with RETELL_API_KEY) or elevenlabs
  -h, --help      this text

Environment:
  CLIENT_ID       OAuth client of the clinic to check (default: DEMO_CLIENT_ID)
  CLIENT_SECRET   its secret (default: DEMO_CLIENT_SECRET)
  VERIFY_PHONE    patient phone for the test bookings (default +14155552671;
                  required with --live: use your own phone, it gets texts)
  KEEP=1          keep the test appointments instead of cancelling them
  RETELL_API_KEY  with --platform retell: the clinic's Retell key, to sign requests

Dry run (default): the bookings are real and cancelled afterwards, but the
confirmation goes only to the sandbox provider (x-dry-run), so no patient is
texted. Needs curl and node.
EOF
}

BASE_URL="http://localhost:3000"
LIVE=0
PLATFORM=vapi
WANT_PLATFORM=0
for arg in "$@"; do
  if [ "$WANT_PLATFORM" = 1 ]; then PLATFORM="$arg"; WANT_PLATFORM=0; continue; fi
  case "$arg" in
    --live) LIVE=1 ;;
    --platform) WANT_PLATFORM=1 ;;
    --platform=*) PLATFORM="${arg#--platform=}" ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "unknown option: $arg (see --help)" >&2; exit 2 ;;
    *) BASE_URL="${arg%/}" ;;
  esac
done
case "$PLATFORM" in
  vapi|retell|elevenlabs) ;;
  *) echo "FAIL  setup: --platform is vapi, retell or elevenlabs"; exit 2 ;;
esac
if [ "$PLATFORM" = retell ] && [ -z "${RETELL_API_KEY:-}" ]; then
  echo "FAIL  setup: --platform retell signs requests with the clinic's Retell key; set RETELL_API_KEY"; exit 2
fi
CLIENT_ID="${CLIENT_ID:-${DEMO_CLIENT_ID:-}}"
CLIENT_SECRET="${CLIENT_SECRET:-${DEMO_CLIENT_SECRET:-}}"
PHONE="${VERIFY_PHONE:-+14155552671}"

command -v curl >/dev/null || { echo "FAIL  setup: curl is required"; exit 2; }
command -v node >/dev/null || { echo "FAIL  setup: node is required (for JSON)"; exit 2; }
if [ -z "$CLIENT_ID" ] || [ -z "$CLIENT_SECRET" ]; then
  echo "FAIL  setup: set CLIENT_ID and CLIENT_SECRET (npm start prints them on first run)"; exit 2
fi
if [ "$LIVE" = 1 ] && [ -z "${VERIFY_PHONE:-}" ]; then
  echo "FAIL  setup: --live texts a real phone; set VERIFY_PHONE to your own number"; exit 2
fi

FAILURES=0
pass() { printf 'PASS  %-18s %s\n' "$1" "$2"; }
fail() { printf 'FAIL  %-18s %s\n' "$1" "$2"; FAILURES=$((FAILURES + 1)); }
info() { printf 'INFO  %-18s %s\n' "$1" "$2"; }

# json EXPR: evaluates EXPR with `j` bound to the JSON read from stdin; prints '' on any error.
json() { node -e '
  let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
    try { const j = JSON.parse(s); const v = eval(process.argv[1]); process.stdout.write(v === undefined || v === null ? "" : String(v)); }
    catch { process.stdout.write(""); }
  });' "$1"; }

# http METHOD PATH [BODY] [extra curl args...]: prints "<status>\n<body>"
http() {
  local method="$1" path="$2" body="${3:-}"; shift 3 2>/dev/null || shift $#
  local args=(-s -o /tmp/verify_body.$$ -w '%{http_code}' -X "$method" "$BASE_URL$path" --max-time 20)
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
  local code; code=$(curl "${args[@]}" "$@" 2>/dev/null) || code="000"
  printf '%s\n' "$code"; cat /tmp/verify_body.$$ 2>/dev/null; rm -f /tmp/verify_body.$$
}
status_of() { head -n1; }
# answered CODE: "answered 404", or what curl's 000 means
answered() { if [ "$1" = 000 ]; then echo "gave no answer (cannot connect to $BASE_URL)"; else echo "answered $1"; fi; }
body_of() { tail -n +2; }

# retell_sign BODY: X-Retell-Signature for BODY as Retell computes it, under RETELL_API_KEY.
retell_sign() { node -e '
  const ts = String(Date.now());
  const d = require("crypto").createHmac("sha256", process.argv[2]).update(process.argv[1]).update(ts).digest("hex");
  process.stdout.write(`v=${ts},d=${d}`);' "$1" "$RETELL_API_KEY"; }

# tool NAME ARGS_JSON CALL_ID [extra curl args...]: one tool call through the --platform door,
# as that platform sends it. Prints "<status>\n<result JSON>", the result in the shape every
# door shares ({success, message, ...}); a Vapi error becomes {success:false, message}.
tool() {
  local name="$1" args="$2" call="$3"; shift 3
  case "$PLATFORM" in
    vapi)
      local R; R=$(http POST /api/vapi/tools "{\"message\":{\"type\":\"tool-calls\",\"call\":{\"id\":\"$call\"},\"toolCallList\":[{\"id\":\"$call-$name\",\"type\":\"function\",\"function\":{\"name\":\"$name\",\"arguments\":$args}}]}}" "${AUTH[@]}" "$@")
      printf '%s\n' "$(printf '%s' "$R" | status_of)"
      printf '%s' "$R" | body_of | json 'j.results[0].result ?? JSON.stringify({ success: false, message: j.results[0].error })' ;;
    retell)
      local meta="${RETELL_METADATA:-}"; [ -n "$meta" ] || meta='{}'
      local body="{\"name\":\"$name\",\"call\":{\"call_id\":\"$call\",\"direction\":\"inbound\",\"from_number\":\"$PHONE\",\"metadata\":$meta},\"args\":$args}"
      http POST "/api/retell/$ORG_ID/tools" "$body" -H "X-Retell-Signature: $(retell_sign "$body")" "$@" ;;
    elevenlabs)
      local body; body=$(node -e 'const a = JSON.parse(process.argv[1]); a.conversationId = process.argv[2]; a.callerNumber = process.argv[3]; process.stdout.write(JSON.stringify(a))' "$args" "$call" "$PHONE")
      http POST "/api/elevenlabs/tools/$name" "$body" "${AUTH[@]}" "$@" ;;
  esac
}

echo "Verifying $BASE_URL through $PLATFORM ($( [ "$LIVE" = 1 ] && echo 'LIVE: real SMS' || echo 'dry run: sandbox SMS only'))"

# 0. Anything there at all? curl's own failure (connection refused, no such
# host, timeout) is not an HTTP answer: say so and stop.
if ! curl -s -o /dev/null --max-time 10 "$BASE_URL/healthz"; then
  fail connect "cannot connect to $BASE_URL (is the server running?)"
  exit 1
fi

# 1. Auth: the OAuth token endpoint, and the tool route refusing a missing token.
R=$(curl -s -w '\n%{http_code}' -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials "$BASE_URL/oauth/token" --max-time 10) || R=$'\n000'
CODE=$(printf '%s' "$R" | tail -n1); BODY=$(printf '%s' "$R" | sed '$d')
TOKEN=$(printf '%s' "$BODY" | json 'j.access_token')
case "$PLATFORM" in
  vapi) NOAUTH=$(http POST /api/vapi/tools '{"message":{"type":"status-update"}}' | status_of) ;;
  retell) NOAUTH=$(http POST "/api/retell/$(node -e 'console.log(require("crypto").randomUUID())')/tools" '{"name":"checkAvailability","call":{"call_id":"verify-unsigned"},"args":{}}' | status_of) ;;
  elevenlabs) NOAUTH=$(http POST /api/elevenlabs/tools/checkAvailability '{"date":"2099-01-01","conversationId":"verify-noauth"}' | status_of) ;;
esac
if [ "$CODE" = 200 ] && [ -n "$TOKEN" ] && [ "$NOAUTH" = 401 ]; then
  pass auth "token issued; unauthenticated call refused (401)"
else
  fail auth "token endpoint $(answered "$CODE"), unauthenticated call $(answered "$NOAUTH")"
  echo "Cannot continue without a token."; exit 1
fi
AUTH=(-H "Authorization: Bearer $TOKEN")
DRY=(); [ "$LIVE" = 1 ] || DRY=(-H 'x-dry-run: 1')
ORG_ID=$(node -e 'const p = process.argv[1].split(".")[1]; console.log(JSON.parse(Buffer.from(p, "base64url")).org_id)' "$TOKEN")

# 2. Org check: a request naming another clinic must be refused with 403.
OTHER=$(node -e 'console.log(require("crypto").randomUUID())')
case "$PLATFORM" in
  vapi) MISMATCH=$(http POST /api/vapi/tools/checkAvailability "{\"toolCallId\":\"verify-org\",\"message\":{\"call\":{\"metadata\":{\"org_id\":\"$OTHER\"}}},\"tool\":{\"arguments\":{\"date\":\"2099-01-01\"}}}" "${AUTH[@]}" | status_of) ;;
  retell) MISMATCH=$(RETELL_METADATA="{\"org_id\":\"$OTHER\"}" tool checkAvailability '{"date":"2099-01-01"}' verify-org | status_of) ;;
  elevenlabs) MISMATCH=$(tool checkAvailability "{\"date\":\"2099-01-01\",\"organizationId\":\"$OTHER\"}" verify-org | status_of) ;;
esac
if [ "$MISMATCH" = 403 ]; then pass "org check" "token org $ORG_ID; another org in the request refused (403)"
else fail "org check" "a request naming another org $(answered "$MISMATCH"), expected 403"; fi

# 3. SMS credentials and provider reachability (nothing secret is returned).
DIAG=$(http GET /api/sms/diagnostics '' "${AUTH[@]}")
if [ "$(printf '%s' "$DIAG" | status_of)" = 200 ]; then
  D=$(printf '%s' "$DIAG" | body_of)
  if [ "$(printf '%s' "$D" | json 'j.configured')" = true ]; then
    # reachable: true (answered), false (did not), null (not checked: the sandbox has no network API, or the credentials do not decrypt)
    SUMMARY=$(printf '%s' "$D" | json 'j.providers.map(p => `${p.position}:${p.kind} decrypts=${p.decrypts} reachable=${p.reachable === null ? "not-checked" : p.reachable} senders=${p.senders}`).join("; ")')
    if [ "$(printf '%s' "$D" | json 'j.providers.every(p => p.decrypts)')" = true ]; then pass "sms credentials" "$SUMMARY"
    else fail "sms credentials" "$SUMMARY"; fi
    ANSWERED=$(printf '%s' "$D" | json 'j.providers.filter(p => p.reachable === true).map(p => p.kind).join(", ")')
    SILENT=$(printf '%s' "$D" | json 'j.providers.filter(p => p.reachable === false).map(p => p.kind).join(", ")')
    if [ -n "$ANSWERED" ]; then pass "sms reachability" "answered: $ANSWERED${SILENT:+; no answer: $SILENT}"
    elif [ -n "$SILENT" ]; then fail "sms reachability" "no provider answered: $SUMMARY"
    else info "sms reachability" "not checked: no provider in the chain has a network API to probe ($SUMMARY)"; fi
  else
    fail "sms credentials" "SMS is not configured for this clinic (PUT /api/admin/orgs/$ORG_ID/sms)"
  fi
else
  fail "sms credentials" "diagnostics $(answered "$(printf '%s' "$DIAG" | status_of)")"
fi

# 3b. Provider webhooks: the server posts to each of the clinic's webhook URLs the
# way the provider would (a self-signed probe): an unsigned request must be
# refused, and one signed with the clinic's own Twilio auth token accepted. A
# refused signed probe means the URL Twilio signs is not the one the service
# checks (PUBLIC_URL / TRUST_PROXY). Only Telnyx can sign Telnyx requests.
WH=$(http GET '/api/sms/diagnostics?probe=webhooks' '' "${AUTH[@]}")
if [ "$(printf '%s' "$WH" | status_of)" = 200 ]; then
  W=$(printf '%s' "$WH" | body_of)
  COUNT=$(printf '%s' "$W" | json '(j.webhooks || []).length')
  if [ "${COUNT:-0}" = 0 ]; then
    info "webhooks" "not checked: no provider in the chain sends webhooks"
  else
    i=0
    while [ "$i" -lt "$COUNT" ]; do
      LINE=$(printf '%s' "$W" | json "(w => \`\${w.kind} \${w.url} reachable=\${w.reachable} unsigned-refused=\${w.unsignedRefused} signed-accepted=\${w.signedAccepted === null ? 'not-checked' : w.signedAccepted}\`)(j.webhooks[$i])")
      OK=$(printf '%s' "$W" | json "(w => w.reachable && w.unsignedRefused && w.signedAccepted !== false)(j.webhooks[$i])")
      KIND=$(printf '%s' "$W" | json "j.webhooks[$i].kind")
      if [ "$OK" = true ]; then pass "webhook $KIND" "$LINE"
      else fail "webhook $KIND" "$LINE (check PUBLIC_URL, TRUST_PROXY and that the provider can reach it)"; fi
      i=$((i + 1))
    done
  fi
else
  fail "webhooks" "diagnostics $(answered "$(printf '%s' "$WH" | status_of)")"
fi

# Find two open slots in the next two weeks.
RUN0=$(date +%s)
SLOT1=""; SLOT2=""
for i in $(seq 1 14); do
  DAY=$(node -e 'const d=new Date(Date.now()+Number(process.argv[1])*864e5); console.log(d.toISOString().slice(0,10))' "$i")
  AV=$(tool checkAvailability "{\"date\":\"$DAY\"}" "verify-av-$i-$RUN0" | body_of)
  TIMES=$(printf '%s' "$AV" | json 'j.slots.map(s => s.startsAt.slice(11,16)).join(" ")')
  set -- $TIMES
  if [ $# -ge 2 ]; then SLOT1="$DAY $1"; SLOT2="$DAY $2"; break; fi
done
if [ -z "$SLOT1" ]; then fail "booking created" "no two open slots in the next 14 days"; echo; echo "$FAILURES check(s) failed."; exit 1; fi

RUN=$(date +%s)
BOOK_ARGS="{\"patientName\":\"Verify Script\",\"patientPhone\":\"$PHONE\",\"appointmentDate\":\"${SLOT1% *}\",\"appointmentTime\":\"${SLOT1#* }\"}"

# 4. Booking through the platform's door, and (Vapi) through the legacy shape.
B1=$(tool bookClinicAppointment "$BOOK_ARGS" "verify-call-$RUN" "${DRY[@]}" | body_of)
R1=$B1
APPT1=$(printf '%s' "$R1" | json 'j.success ? j.appointmentId : ""')
SMS1=$(printf '%s' "$R1" | json 'j.smsStatus'); PROV1=$(printf '%s' "$R1" | json 'j.smsProvider'); WHY1=$(printf '%s' "$R1" | json 'j.smsReason')
[ "$PLATFORM" = vapi ] && B2=$(http POST /api/vapi/tools/bookClinicAppointment "{\"toolCallId\":\"verify-legacy-$RUN\",\"message\":{\"call\":{\"metadata\":{\"org_id\":\"$ORG_ID\"}}},\"tool\":{\"arguments\":{\"patientName\":\"Verify Legacy\",\"patientPhone\":\"$PHONE\",\"appointmentDate\":\"${SLOT2% *}\",\"appointmentTime\":\"${SLOT2#* }\"}}}" "${AUTH[@]}" "${DRY[@]}" | body_of)
APPT2=$(printf '%s' "${B2:-}" | json 'j.result.success ? j.result.appointmentId : ""')
if [ -n "$APPT1" ] && [ "$PLATFORM" != vapi ]; then
  pass "booking created" "$PLATFORM: $APPT1 at $(printf '%s' "$R1" | json 'j.spokenTime')"
elif [ -n "$APPT1" ] && [ -n "$APPT2" ]; then
  pass "booking created" "vapi: $APPT1 at $(printf '%s' "$R1" | json 'j.spokenTime'); legacy: $APPT2"
else
  fail "booking created" "$PLATFORM: $(printf '%s' "$B1" | head -c 200) legacy: $(printf '%s' "${B2:-}" | head -c 200)"
fi

# 5. Replay: the same toolCallId must return the same appointment, not a new one.
R3=$(tool bookClinicAppointment "$BOOK_ARGS" "verify-call-$RUN" "${DRY[@]}" | body_of)
APPT3=$(printf '%s' "$R3" | json 'j.appointmentId')
if [ -n "$APPT1" ] && [ "$APPT3" = "$APPT1" ]; then pass "idempotent replay" "the same request again returned the same appointment"
else fail "idempotent replay" "replay returned '$APPT3', expected '$APPT1'"; fi

# 6. smsStatus and which provider accepted the message.
case "$SMS1" in
  sent) pass smsStatus "sent via ${PROV1:-unknown}$( [ "$LIVE" = 1 ] || echo ' (sandbox: dry run)')" ;;
  queued) pass smsStatus "queued (${WHY1:-in flight}); retried in the background" ;;
  *) fail smsStatus "${SMS1:-missing}${WHY1:+ ($WHY1)}" ;;
esac

# Clean up the test appointments unless asked to keep them.
if [ "${KEEP:-0}" != 1 ]; then
  for A in $APPT1 $APPT2; do
    tool cancelAppointment "{\"appointmentId\":\"$A\"}" "verify-cancel-$A" >/dev/null
  done
  info cleanup "test appointments cancelled"
fi

echo
if [ "$FAILURES" -eq 0 ]; then echo "All checks passed."; exit 0; fi
echo "$FAILURES check(s) failed."; exit 1
