%%% @doc The status page (`GET /'): what a person needs at a glance, in
%%% plain HTML and CSS served by the node (no script, no CDN), refreshed
%%% every 5 s by the browser.
%%%
%%% It shows the repository, branch and commit; the node's status; what
%%% runs now (`in_progress'); each app's version, status, health and why it
%%% waits or what failed; spec errors; the pending plan; in cluster mode
%%% the members and the rollouts; and the latest events. Every text from
%%% outside (app names, versions, reasons) is HTML-escaped.
-module(bc_gitops_status_page).

-include("bc_gitops.hrl").

-export([render/1]).

-define(REFRESH_S, 5).

%% @doc The page for `Facts' ({@link bc_gitops_http_api:facts/0}).
-spec render(bc_gitops_http_api:facts()) -> iodata().
render(#{node := Node, status := Status} = Facts) ->
    Now = erlang:system_time(millisecond),
    S = case Status of
            undefined -> #{status => not_running};
            _ -> Status
        end,
    Name = maps:get(status, S),
    ["<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
     "<meta http-equiv=\"refresh\" content=\"", integer_to_list(?REFRESH_S), "\">",
     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
     "<title>bc_gitops: ", esc(Node), " ", esc(Name), "</title><style>", css(), "</style></head>\n",
     "<body><header><h1>bc_gitops</h1><span class=\"node\">", esc(Node), "</span>",
     badge("s", Name), suspended(S), "</header>\n<main>",
     repository(S, Now),
     running(maps:get(in_progress, S, []), Now),
     apps(Facts, S, Now),
     spec_errors(maps:get(spec_errors, S, [])),
     plan(maps:get(plan, Facts)),
     cluster(maps:get(cluster, Facts)),
     events(maps:get(events, Facts), Now),
     "</main><footer>Refreshed every ", integer_to_list(?REFRESH_S), " s. Page made ",
     time(Now), ". JSON: <a href=\"/api/status\">/api/status</a>, ",
     "<a href=\"/api/plan\">/api/plan</a>; metrics: <a href=\"/metrics\">/metrics</a>.",
     "</footer></body></html>\n"].

-spec suspended(map()) -> iodata().
suspended(#{suspended := true}) -> " <span class=\"badge s-suspended\">suspended</span>";
suspended(_) -> [].

-spec repository(map(), integer()) -> iodata().
repository(S, Now) ->
    Rows = [{"Repository", esc(maps:get(repo, S, undefined))},
            {"Branch", esc(maps:get(branch, S, undefined))},
            {"Commit", ["<code>", esc(maps:get(last_commit, S, undefined)), "</code>"]},
            {"Last reconcile", case maps:get(last_reconcile, S, undefined) of
                                   undefined -> "none yet";
                                   At -> [time(At), " (", ago(Now - At), ")"]
                               end},
            {"Apps", io_lib:format("~b managed, ~b healthy",
                                   [maps:get(app_count, S, 0), maps:get(healthy_count, S, 0)])}]
        ++ [{"Last error", ["<span class=\"err\">", esc(E), "</span>"]}
            || E <- [maps:get(last_error, S, undefined)], E =/= undefined],
    section("Repository", ["<dl>", [["<dt>", K, "</dt><dd>", V, "</dd>"] || {K, V} <- Rows],
                           "</dl>"]).

-spec running([bc_gitops_progress:entry()], integer()) -> iodata().
running([], _Now) ->
    section("Running now", "<p class=\"muted\">Nothing runs.</p>");
running(Entries, Now) ->
    section("Running now",
            table(["App", "Action", "Phase", "Since"],
                  [[esc(A), esc(Action), badge("p", Phase), [ago(Now - Since)]]
                   || #{app := A, action := Action, phase := Phase, since := Since} <- Entries])).

-spec apps(bc_gitops_http_api:facts(), map(), integer()) -> iodata().
apps(#{desired := Desired, current := Current}, S, Now) ->
    Names = lists:usort(maps:keys(Desired) ++ maps:keys(Current)),
    Rows = [app_row(App, maps:get(App, Desired, undefined), maps:get(App, Current, undefined), S, Now)
            || App <- Names],
    section("Apps", case Rows of
                        [] -> "<p class=\"muted\">No app is managed yet.</p>";
                        _ -> table(["App", "Version", "Status", "Health", "Notes"], Rows)
                    end).

-spec app_row(atom(), #app_spec{} | undefined, #app_state{} | undefined, map(), integer()) ->
    [iodata()].
app_row(App, Spec, State, S, Now) ->
    Want = case Spec of
               #app_spec{version = W} -> W;
               undefined -> undefined
           end,
    {Version, Status, Health} = case State of
                                    #app_state{version = V, status = St, health = H} -> {V, St, H};
                                    undefined -> {undefined, not_deployed, unknown}
                                end,
    Shown = case {Version, Want} of
                {undefined, undefined} -> "-";
                {undefined, _} -> ["<span class=\"muted\">", esc(Want), "</span>"];
                {_, undefined} -> [esc(Version), " <span class=\"why\">(not in git: to remove)</span>"];
                {Same, Same} -> esc(Version);
                _ -> [esc(Version), " &rarr; ", esc(Want)]
            end,
    Guest = case State of
                #app_state{node = Node} when Node =/= undefined ->
                    [["<span class=\"run\">in guest ", esc(Node), "</span>"]];
                _ ->
                    []
            end,
    [["<b>", esc(App), "</b>"], Shown, badge("r", Status), badge("h", Health),
     lists:join("<br>", Guest ++ notes(App, S, Now))].

%% Why an app waits, what failed, what runs on it now.
-spec notes(atom(), map(), integer()) -> [iodata()].
notes(App, S, Now) ->
    Progress = [["<span class=\"run\">", esc(P), " since ", ago(Now - Since), "</span>"]
                || #{app := A, phase := P, since := Since} <- maps:get(in_progress, S, []), A =:= App],
    Failed = case maps:get(app_errors, S, #{}) of
                 #{App := #{reason := R, version := V, attempts := N, retry_in_ms := Ms}} ->
                     [["<span class=\"err\">", esc(V), " failed: ", esc(R), " (attempt ",
                       integer_to_list(N), "; retry in ", ago(Ms), ")</span>"]];
                 _ -> []
             end,
    Waits = [["<span class=\"why\">waits: ", esc(Why), "</span>"]
             || {A, Why} <- maps:get(waiting, S, []), A =:= App],
    Blocked = [["<span class=\"why\">blocked: ", esc(Why), "</span>"]
               || {A, Why} <- maps:get(blocked, S, []), A =:= App],
    Repairs = case maps:get(repairs, S, #{}) of
                  #{App := #{count := C, reason := R2}} ->
                      [["<span class=\"why\">restarted ", integer_to_list(C), " times (", esc(R2),
                        ")</span>"]];
                  _ -> []
              end,
    Progress ++ Failed ++ Waits ++ Blocked ++ Repairs.

-spec spec_errors([map()]) -> iodata().
spec_errors([]) ->
    [];
spec_errors(Errors) ->
    section("Spec errors", ["<ul>", [["<li class=\"err\"><code>",
                                      esc(bc_gitops_specs:format_diagnostic(E)), "</code></li>"]
                                     || E <- Errors], "</ul>"]).

-spec plan(bc_gitops_plan:plan() | undefined) -> iodata().
plan(#{actions := [], blocked := []}) ->
    section("Pending plan", "<p class=\"muted\">Nothing to do: the node matches the last commit read.</p>");
plan(#{actions := Actions, blocked := Blocked}) ->
    section("Pending plan",
            ["<p class=\"muted\">What the next reconcile would do against the last commit read "
             "(apps held by a backoff or a dependency wait, see Notes).</p><ul>",
             [["<li>", action(A), "</li>"] || A <- Actions],
             [["<li class=\"why\">", esc(App), " blocked: ", esc(Why), "</li>"] || {App, Why} <- Blocked],
             "</ul>"]);
plan(undefined) ->
    [].

-spec action(bc_gitops_plan:action()) -> iodata().
action({remove, App}) -> ["remove <b>", esc(App), "</b>"];
action({deploy, #app_spec{name = App, version = V}}) -> ["deploy <b>", esc(App), "</b> ", esc(V)];
action({upgrade, #app_spec{name = App, version = V}, From}) ->
    ["upgrade <b>", esc(App), "</b> ", esc(From), " &rarr; ", esc(V)];
action({redeploy, #app_spec{name = App, version = V}, Why}) ->
    ["restart <b>", esc(App), "</b> ", esc(V), " (", esc(Why), ")"];
action({Kind, #app_spec{name = App}}) -> [esc(Kind), " <b>", esc(App), "</b>"].

-spec cluster(map() | undefined) -> iodata().
cluster(undefined) ->
    [];
cluster(#{members := Members} = C) ->
    MemberRows = [[esc(Node), badge("m", maps:get(state, M, unknown)),
                   ["<code>", short(maps:get(commit, M, undefined)), "</code>"],
                   lists:join(", ", [[esc(A), " ", esc(maps:get(version, I, undefined)), " ",
                                      esc(maps:get(status, I, undefined))]
                                     || {A, I} <- lists:sort(maps:to_list(maps:get(apps, M, #{})))])]
                  || {Node, M} <- lists:sort(maps:to_list(Members))],
    Rollouts = [[esc(maps:get(app, R)), [esc(maps:get(from, R, undefined)), " &rarr; ",
                                         esc(maps:get(to, R, undefined))],
                 node_list(maps:get(done, R, [])), node_list(maps:get(current, R, [])),
                 node_list(maps:get(pending, R, [])), badge("o", maps:get(state, R, unknown)),
                 case maps:get(reason, R, undefined) of
                     undefined -> [];
                     Why -> esc(Why)
                 end]
                || R <- maps:get(rollouts, C, [])],
    section("Cluster",
            ["<p>Coordinator: <b>", esc(maps:get(coordinator, C, undefined)), "</b></p>",
             table(["Member", "State", "Commit", "Apps"], MemberRows),
             case Rollouts of
                 [] -> "<p class=\"muted\">No rollout runs.</p>";
                 _ -> ["<h3>Rollouts</h3>",
                       table(["App", "Versions", "Done", "Now", "Pending", "State", "Why"], Rollouts)]
             end]).

-spec node_list([node()]) -> iodata().
node_list([]) -> "-";
node_list(Nodes) -> lists:join(", ", [esc(N) || N <- Nodes]).

-spec events([bc_gitops_events:event()], integer()) -> iodata().
events([], _Now) ->
    section("Latest events", "<p class=\"muted\">None yet.</p>");
events(Events, _Now) ->
    section("Latest events",
            table(["Time", "Event"], [[time(At), ["<span class=\"l-", atom_to_list(Level), "\">",
                                                  esc(Text), "</span>"]]
                                      || #{at := At, level := Level, text := Text} <- Events])).

%%% Pieces

-spec section(string(), iodata()) -> iodata().
section(Title, Body) ->
    ["\n<section><h2>", Title, "</h2>", Body, "</section>"].

-spec table([string()], [[iodata()]]) -> iodata().
table(Heads, Rows) ->
    ["<table><thead><tr>", [["<th>", H, "</th>"] || H <- Heads], "</tr></thead><tbody>",
     [["<tr>", [["<td>", C, "</td>"] || C <- Row], "</tr>"] || Row <- Rows], "</tbody></table>"].

%% A coloured label; the class says its kind and value.
-spec badge(string(), atom()) -> iodata().
badge(Kind, Value) ->
    ["<span class=\"badge ", Kind, "-", esc(Value), "\">", esc(Value), "</span>"].

-spec short(binary() | undefined) -> iodata().
short(<<Short:12/binary, _/binary>>) -> Short;
short(Other) -> esc(Other).

-spec time(integer()) -> string().
time(Ms) ->
    calendar:system_time_to_rfc3339(Ms div 1000, [{offset, "Z"}]).

-spec ago(integer()) -> iodata().
ago(Ms) when Ms < 1000 -> "now";
ago(Ms) when Ms < 120000 -> [integer_to_list(Ms div 1000), " s"];
ago(Ms) when Ms < 7200000 -> [integer_to_list(Ms div 60000), " min"];
ago(Ms) -> [integer_to_list(Ms div 3600000), " h"].

%% Any term as escaped text.
-spec esc(term()) -> iodata().
esc(undefined) ->
    "-";
esc(Term) ->
    unicode:characters_to_binary(
      [case C of
           $& -> "&amp;";
           $< -> "&lt;";
           $> -> "&gt;";
           $" -> "&quot;";
           $' -> "&#39;";
           _ -> C
       end || <<C/utf8>> <= bc_gitops_json:text(Term)]).

-spec css() -> iodata().
css() ->
    "body{font:14px/1.45 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;margin:0;"
    "background:#f4f6f8;color:#1d2330}"
    "header{background:#1d2330;color:#fff;padding:14px 24px;display:flex;gap:14px;align-items:center}"
    "header h1{font-size:18px;margin:0;font-weight:650}.node{font-family:ui-monospace,monospace;opacity:.85}"
    "main{padding:18px 24px;max-width:1180px}"
    "section{background:#fff;border:1px solid #e1e5ea;border-radius:8px;margin:0 0 16px;padding:12px 16px}"
    "h2{font-size:12px;margin:0 0 10px;text-transform:uppercase;letter-spacing:.06em;color:#5a6272}"
    "h3{font-size:13px;margin:14px 0 6px}"
    "table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:6px 8px;"
    "border-bottom:1px solid #eef0f3;vertical-align:top}th{font-weight:600;color:#5a6272;font-size:12px}"
    "tr:last-child td{border-bottom:0}code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 18px;margin:0}dt{color:#5a6272}dd{margin:0}"
    "ul{margin:4px 0;padding-left:20px}p{margin:4px 0}"
    ".badge{display:inline-block;padding:1px 9px;border-radius:999px;font-weight:600;font-size:12px;"
    "background:#e8ebef;color:#3a4150}"
    ".s-synced,.h-healthy,.r-running,.m-up,.o-done{background:#d7f1e1;color:#0f6a32}"
    ".s-reconciling,.p-fetching,.p-building,.p-starting,.p-upgrading,.p-stopping,.o-running"
    "{background:#dce7fb;color:#1d4ea3}"
    ".s-out_of_sync,.s-degraded,.s-suspended,.p-health_wait,.h-unknown,.r-pending,.r-upgrading"
    "{background:#fff0c7;color:#7a5200}"
    ".s-error,.s-not_running,.h-unhealthy,.r-failed,.r-stopped,.m-down,.o-halted{background:#fde1e1;color:#a31313}"
    ".muted{color:#8a92a3}.why{color:#8a5a00}.err,.l-error{color:#b01818}.l-warning{color:#8a5a00}"
    ".run{color:#1d4ea3}footer{padding:0 24px 24px;color:#8a92a3;font-size:12px}a{color:#1d4ea3}".
