#!/bin/sh
# Prints each failed Common Test case of the newest run with its reason and
# the tail of its log, so a CI log whose tail is all the reader gets still
# names what failed and why.
logs=${1:-_build/test/logs}
run=$(ls -1d "$logs"/ct_run.* 2>/dev/null | tail -n 1)
[ -n "$run" ] || { echo "ct_failures: no Common Test run under $logs" >&2; exit 0; }
echo "== failed Common Test cases in $run"
find "$run" -name suite.log | sort | while read -r log; do
    awk '
        /^=/ && failing { failing = 0; print "   log: " f }
        /^=case/    { c = $2 }
        /^=logfile/ { f = $2 }
        failing     { if (n++ < 40) print "   " $0; next }
        /^=result/ && $2 ~ /^(failed|auto_skipped)/ {
            sub(/^=result +/, ""); print "-- " c "\n   " $0; failing = 1; n = 0
        }' "$log" |
    while IFS= read -r line; do
        case "$line" in
            "   log: "*)
                # The case log is HTML; the lines before its end say what the
                # case was doing when it failed.
                html="$(dirname "$log")/${line#   log: }"
                [ -f "$html" ] && sed -e 's/<[^>]*>//g' -e '/^[[:space:]]*$/d' \
                    -e 's/&lt;/</g' -e 's/&gt;/>/g' -e 's/&amp;/\&/g' "$html" |
                    awk '/^=== Ended at/ { exit } { l[NR % 30] = $0; n = NR }
                         END { for (i = n - 29; i <= n; i++) if (i > 0) print "   | " l[i % 30] }' ;;
            *) printf '%s\n' "$line" ;;
        esac
    done
done
