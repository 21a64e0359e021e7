# shellcheck shell=bash
# The "ok NAME" / "FAIL NAME: WHY" lines of deploy's test scripts and their closing
# "TEST: N passed, M failed". Source it, set check_test to the script's name.
passed=0
failed=0
check() {  # NAME EXIT-STATUS [WHY]
  if [ "$2" -eq 0 ]; then
    echo "ok   $1"
    passed=$((passed + 1))
  else
    echo "FAIL $1${3:+: $3}"
    failed=$((failed + 1))
  fi
}
summary() {  # prints the closing line and exits 1 if a check failed
  echo "${check_test:-test}: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit $?
}
