#!/usr/bin/env bash
# Push -> run started, polling at --poll 5s: five commits, each timed from
# the commit to the run's appearance in `drover runs`.
set -euo pipefail
B=${B:-$(cd "$(dirname "$0")/.." && pwd)/target/debug}
d=$(mktemp -d)
$B/drover certs init --dir $d/certs >/dev/null
$B/drover-coordinator --tls-dir $d/certs/coordinator --listen 127.0.0.1:0 --data-dir $d/data > $d/out 2> $d/coord.log &
pid=$!
trap 'kill $pid; rm -rf $d' EXIT
until grep -q listening $d/out; do sleep 0.1; done
addr=$(sed -n 's/drover-coordinator listening on //p' $d/out)
dr() { $B/drover --coordinator https://$addr --tls-dir $d/certs/admin "$@"; }
mkdir $d/repo && cd $d/repo && git init -q -b main
printf 'name: p\njobs:\n  a: {steps: [{run: "true"}]}\n' > .drover.yml
git add . && git -c user.name=t -c user.email=t@e commit -qm one
dr repo add web --url $d/repo --poll 5s >/dev/null
sleep 7   # the first poll is the baseline
for i in 1 2 3 4 5; do
  before=$(dr runs -o json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  echo $i > f$i && git add . && git -c user.name=t -c user.email=t@e commit -qm c$i
  t0=$(date +%s.%N)
  until [ "$(dr runs -o json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" -gt "$before" ]; do sleep 0.05; done
  t1=$(date +%s.%N)
  echo "push $i -> run started: $(python3 -c "print(f'{$t1-$t0:.2f}')") s"
  sleep $((RANDOM % 3))
done
