%%% @doc The `bc_gitops' command: operate a running node from a shell, as
%%% `flux' and `argocd' do, and validate a gitops repository offline.
%%%
%%% `make' installs it as `bin/bc_gitops' in a checkout; a release carries
%%% the same script as `lib/bc_gitops-<vsn>/priv/bc_gitops'. The script
%%% puts this application's `ebin' on the code path and calls {@link
%%% run/1}, which returns the exit code.
%%%
%%% It reaches a node over distribution as a hidden node with a name of its
%%% own (like `bin/my_node rpc'): `--node Name@Host', and the cookie from
%%% `--cookie', `$RELEASE_COOKIE' or `~/.erlang.cookie'. Every failure is
%%% one line on stderr and exit code 1, never a crash dump. `validate DIR'
%%% and `plan --dir DIR' read a checkout with the same Rust core as the
%%% node (the NIF in `priv/'), with no network and no Rust toolchain.
-module(bc_gitops_cli).

-include("bc_gitops.hrl").

-export([run/1]).

-define(WIDTH, 100).
%% Calls that wait for a reconcile, a build or a rollback wait this long.
-define(LONG, infinity).
-define(SHORT, 30000).

-define(USAGE,
"usage: bc_gitops [--node NAME@HOST] [--cookie COOKIE] [--json] COMMAND [ARGS]

Commands on a running node (--node; the cookie from --cookie, $RELEASE_COOKIE
or ~/.erlang.cookie):
  status            apps with version, status, health, and why each waits
  plan              what the next reconcile would do (exit 0: nothing, 2: changes)
  plan --dir DIR    plan a local checkout of the gitops repository against the node
  reconcile         reconcile now (exit 0: in sync, 2: out of sync)
  history [APP]     the latest changes, newest first
  rollback APP      back to the version before its last change, then pinned there
  pin APP           keep APP at the version it runs until git changes its spec
  unpin APP         follow git again
  suspend, resume   pause and resume automatic reconciles
  cluster           cluster mode: members and rollouts

Offline:
  validate DIR      check the specs of a gitops checkout (exit 1 on any error)

Options: --json (read commands), --apps-dir DIR (default: the node's, or apps)
").

%% @doc Runs the command `Args'; its exit code.
-spec run([string()]) -> 0 | 1 | 2.
run(Args) ->
    try command(parse(Args, #{pos => []}))
    catch
        throw:{cli_error, Message} ->
            fail(Message);
        Class:Reason:Stack ->
            fail(io_lib:format("internal error: ~0tp:~0tp at ~0tp",
                               [Class, Reason, lists:sublist(Stack, 2)]))
    end.

-spec fail(iodata()) -> 1.
fail(Message) ->
    io:put_chars(standard_error, ["bc_gitops: ", Message, $\n]),
    1.

-spec die(iodata()) -> no_return().
die(Message) ->
    throw({cli_error, Message}).

-spec die(string(), [term()]) -> no_return().
die(Format, Args) ->
    die(io_lib:format(Format, Args)).

%%% Arguments

-spec parse([string()], map()) -> map() | help.
parse([], #{pos := Pos} = O) ->
    O#{pos := lists:reverse(Pos)};
parse(["--json" | R], O) -> parse(R, O#{json => true});
parse([H | _], _O) when H =:= "-h"; H =:= "--help"; H =:= "help" -> help;
parse(["--" ++ Opt | R], O) ->
    {Name, Value, Rest} = case string:split(Opt, "=") of
                              [N, V] -> {N, V, R};
                              [N] when R =/= [] -> {N, hd(R), tl(R)};
                              [N] -> die("option --~ts needs a value", [N])
                          end,
    Key = case Name of
              "node" -> node;
              "cookie" -> cookie;
              "dir" -> dir;
              "apps-dir" -> apps_dir;
              _ -> die("unknown option --~ts (see bc_gitops --help)", [Name])
          end,
    parse(Rest, O#{Key => Value});
parse([Word | R], #{pos := Pos} = O) ->
    parse(R, O#{pos := [Word | Pos]}).

-spec command(map() | help) -> 0 | 1 | 2.
command(help) ->
    out(?USAGE),
    0;
command(#{pos := []}) ->
    die("no command given (see bc_gitops --help)");
command(#{pos := ["validate", Dir]} = O) ->
    validate(Dir, O);
command(#{pos := ["validate" | _]}) ->
    die("usage: bc_gitops validate DIR");
command(#{pos := [Cmd | Args]} = O) ->
    case lists:member(Cmd, ["status", "plan", "reconcile", "history", "rollback", "pin",
                            "unpin", "suspend", "resume", "cluster"]) of
        true -> ok;
        false -> die("unknown command ~ts (see bc_gitops --help)", [Cmd])
    end,
    arity(Cmd, Args),
    Node = connect(O),
    on_node(Cmd, Args, Node, O).

%% The positional arguments each command takes.
-spec arity(string(), [string()]) -> ok.
arity(Cmd, [_]) when Cmd =:= "rollback"; Cmd =:= "pin"; Cmd =:= "unpin"; Cmd =:= "history" -> ok;
arity(Cmd, []) when Cmd =/= "rollback", Cmd =/= "pin", Cmd =/= "unpin" -> ok;
arity(Cmd, _) when Cmd =:= "rollback"; Cmd =:= "pin"; Cmd =:= "unpin" ->
    die("usage: bc_gitops ~ts APP", [Cmd]);
arity(Cmd, _) ->
    die("~ts takes no more arguments (see bc_gitops --help)", [Cmd]).

%%% Commands on a node

-spec on_node(string(), [string()], node(), map()) -> 0 | 1 | 2.
on_node("status", [], Node, O) ->
    status(Node, O);
on_node("plan", [], Node, #{dir := Dir} = O) ->
    plan_dir(Dir, Node, O);
on_node("plan", [], Node, O) ->
    case call(Node, bc_gitops, plan, [], ?LONG) of
        {ok, Plan} -> show_plan(Plan, O);
        {error, Why} -> die("plan failed: ~ts", [reason(Why)])
    end;
on_node("reconcile", [], Node, O) ->
    reconciled(call(Node, bc_gitops, reconcile, [], ?LONG), Node, O);
on_node("history", Which, Node, O) ->
    App = case Which of
              [] -> all;
              [Name] -> known_app(Node, Name)
          end,
    Args = case App of all -> []; _ -> [App] end,
    case call(Node, bc_gitops, history, Args, ?SHORT) of
        {ok, Entries} -> show_history(Entries, O);
        {error, Why} -> die("history: ~ts", [reason(Why)])
    end;
on_node("rollback", [Name], Node, O) ->
    App = known_app(Node, Name),
    case call(Node, bc_gitops, rollback, [App], ?LONG) of
        {ok, #{from := From, to := To, path := Path} = Info} ->
            done(O, Info, "rolled back ~ts from ~ts to ~ts~ts; pinned at ~ts until git changes "
                 "its spec~n(bc_gitops unpin ~ts follows git again now)~n",
                 [App, From, To, path_text(Path), To, App]);
        {error, Why} ->
            die("cannot roll back ~ts: ~ts", [App, reason(Why)])
    end;
on_node("pin", [Name], Node, O) ->
    App = known_app(Node, Name),
    case call(Node, bc_gitops, pin, [App], ?SHORT) of
        {ok, V} -> done(O, #{app => App, pinned => V},
                        "pinned ~ts at ~ts until git changes its spec~n", [App, V]);
        {error, Why} -> die("cannot pin ~ts: ~ts", [App, reason(Why)])
    end;
on_node("unpin", [Name], Node, O) ->
    App = known_app(Node, Name),
    case call(Node, bc_gitops, unpin, [App], ?SHORT) of
        ok -> done(O, #{app => App, pinned => false},
                   "unpinned ~ts: git is followed again (a reconcile started)~n", [App]);
        {error, Why} -> die("cannot unpin ~ts: ~ts", [App, reason(Why)])
    end;
on_node("suspend", [], Node, O) ->
    simple(call(Node, bc_gitops, suspend, [], ?SHORT), O,
           "suspended: automatic reconciles are paused on ~ts~n", [Node]);
on_node("resume", [], Node, O) ->
    simple(call(Node, bc_gitops, resume, [], ?SHORT), O,
           "resumed: automatic reconciles go on, starting now, on ~ts~n", [Node]);
on_node("cluster", [], Node, O) ->
    case call(Node, bc_gitops, cluster_status, [], ?SHORT) of
        {ok, Cluster} -> show_cluster(Cluster, O);
        {error, not_clustered} -> die("~ts is not in cluster mode", [Node]);
        {error, Why} -> die("cluster: ~ts", [reason(Why)])
    end.

-spec simple(term(), map(), string(), [term()]) -> 0.
simple(ok, O, Format, Args) -> done(O, #{result => ok}, Format, Args);
simple({error, Why}, _O, _Format, _Args) -> die(reason(Why)).

%% The outcome of a change: JSON, or a sentence.
-spec done(map(), map(), string(), [term()]) -> 0.
done(#{json := true}, Json, _Format, _Args) -> json(Json), 0;
done(_O, _Json, Format, Args) -> out(io_lib:format(Format, Args)), 0.

%% An app the node knows of (it runs, git has it, or it has a history),
%% as the atom it is there; nothing is created on the node for a name it
%% does not know.
-spec known_app(node(), string()) -> atom().
known_app(Node, Name) ->
    App = try call(Node, erlang, list_to_existing_atom, [Name], ?SHORT)
          catch throw:{cli_error, _} -> unknown_app(Name, Node)
          end,
    Current = case call(Node, bc_gitops, get_current_state, [], ?SHORT) of
                  {ok, C} -> C;
                  _ -> #{}
              end,
    Desired = case call(Node, bc_gitops, get_desired_state, [], ?SHORT) of
                  {ok, D} -> D;
                  _ -> #{}
              end,
    History = case call(Node, bc_gitops, history, [App], ?SHORT) of
                  {ok, H} -> H;
                  _ -> []
              end,
    case maps:is_key(App, Current) orelse maps:is_key(App, Desired) orelse History =/= [] of
        true -> App;
        false -> unknown_app(Name, Node)
    end.

-spec unknown_app(string(), node()) -> no_return().
unknown_app(Name, Node) ->
    die("unknown app ~ts on ~ts", [Name, Node]).

%%% status

-spec status(node(), map()) -> 0.
status(Node, O) ->
    Status = case call(Node, bc_gitops, status, [], ?SHORT) of
                 {ok, S} -> S;
                 {error, Why} -> die("status: ~ts", [reason(Why)])
             end,
    Current = case call(Node, bc_gitops, get_current_state, [], ?SHORT) of
                  {ok, C} -> C;
                  {error, _} -> #{}
              end,
    Desired = case call(Node, bc_gitops, get_desired_state, [], ?SHORT) of
                  {ok, D} -> D;
                  {error, _} -> #{}
              end,
    #{waiting := Waiting, blocked := Blocked} = Status,
    Apps = lists:usort(maps:keys(Current) ++ maps:keys(Desired) ++ [A || {A, _} <- Waiting]
                       ++ [A || {A, _} <- Blocked, is_atom(A)]),
    Rows = [app_row(App, Current, Desired, Waiting, Blocked, maps:get(app_errors, Status, #{}))
            || App <- Apps],
    case O of
        #{json := true} ->
            json(Status#{node => Node, apps => Rows});
        _ ->
            out(io_lib:format("node ~ts: ~ts at ~ts (~ts)~ts~n",
                              [Node, maps:get(status, Status),
                               short(maps:get(last_commit, Status)), text(maps:get(branch, Status)),
                               case maps:get(suspended, Status) of
                                   true -> ", suspended";
                                   false -> ""
                               end])),
            out(io_lib:format("repository ~ts, last reconcile ~ts~n",
                              [text(maps:get(repo, Status)), time(maps:get(last_reconcile, Status))])),
            case maps:get(last_error, Status) of
                undefined -> ok;
                E -> out(io_lib:format("last error: ~ts~n", [reason(E)]))
            end,
            out("\n"),
            table(["APP", "VERSION", "GIT", "STATUS", "HEALTH", "WAITING"],
                  [[App, V, G, St, H, W] || #{app := App, version := V, git := G, status := St,
                                              health := H, waiting := W} <- Rows]),
            running_now(maps:get(in_progress, Status, []), erlang:system_time(millisecond)),
            diagnostics("spec error", maps:get(spec_errors, Status)),
            diagnostics("warning", maps:get(spec_warnings, Status))
    end,
    0.

%% status()'s in_progress: what runs on the node now, and for how long.
-spec running_now([map()], integer()) -> ok.
running_now([], _Now) ->
    ok;
running_now(Entries, Now) ->
    out("\nrunning now:\n"),
    _ = [out(io_lib:format("  ~ts ~ts: ~ts for ~ts~n", [text(App), text(Action), text(Phase),
                                                        ms(max(0, Now - Since))]))
         || #{app := App, action := Action, phase := Phase, since := Since} <- Entries],
    ok.

-spec app_row(atom(), map(), map(), list(), list(), map()) -> map().
app_row(App, Current, Desired, Waiting, Blocked, Errors) ->
    {V, St, H} = case maps:find(App, Current) of
                     {ok, #app_state{version = V0, status = S0, health = H0}} -> {V0, S0, H0};
                     error -> {undefined, absent, undefined}
                 end,
    Why = case {lists:keyfind(App, 1, Waiting), lists:keyfind(App, 1, Blocked),
                maps:find(App, Errors)} of
              {{_, W}, _, _} -> waiting_text(W);
              {_, {_, B}, _} -> "blocked: " ++ blocked_text(B);
              {_, _, {ok, #{reason := R, version := FV}}} ->
                  io_lib:format("~ts failed: ~ts", [FV, reason(R)]);
              _ -> ""
          end,
    #{app => App, version => V, status => St, health => H,
      git => case maps:find(App, Desired) of
                 {ok, #app_spec{version = G}} -> G;
                 error -> undefined
             end,
      waiting => iolist_to_binary(Why)}.

-spec diagnostics(string(), [map()]) -> ok.
diagnostics(_What, []) ->
    ok;
diagnostics(What, Ds) ->
    out("\n"),
    _ = [out(io_lib:format("~ts: ~ts~n", [What, bc_gitops_specs:format_diagnostic(D)])) || D <- Ds],
    ok.

%%% plan

-spec show_plan(bc_gitops_plan:plan(), map()) -> 0 | 2.
show_plan(#{actions := Actions, blocked := Blocked}, O) ->
    Rows = [action_row(A) || A <- Actions],
    case O of
        #{json := true} ->
            json(#{changes => [#{action => K, app => App, from => F, to => T,
                                 why => iolist_to_binary(W)}
                               || [K, App, F, T, W] <- Rows],
                   blocked => [#{app => App, reason => iolist_to_binary(blocked_text(B))}
                               || {App, B} <- Blocked]});
        _ ->
            case Rows of
                [] -> out("no changes: the node matches the repository\n");
                _ -> table(["ACTION", "APP", "FROM", "TO", "WHY"], Rows)
            end,
            _ = [out(io_lib:format("blocked: ~ts: ~ts~n", [text(App), blocked_text(B)]))
                 || {App, B} <- Blocked],
            out(io_lib:format("~B change~ts, ~B blocked~n",
                              [length(Rows), plural(length(Rows)), length(Blocked)]))
    end,
    case Actions of
        [] -> 0;
        _ -> 2
    end.

-spec action_row(bc_gitops_plan:action()) -> [term()].
action_row(Action) ->
    App = bc_gitops_action:app(Action),
    case Action of
        {deploy, #app_spec{version = V}} -> [deploy, App, undefined, V, ""];
        {upgrade, #app_spec{version = V}, From} -> [upgrade, App, From, V, ""];
        {reconfigure, #app_spec{version = V}} -> [reconfigure, App, V, V, "env changed"];
        {redeploy, #app_spec{version = V}, Why} -> [repair, App, V, V, atom_to_list(Why)];
        {remove, _} -> [remove, App, undefined, undefined, "not in git"]
    end.

%% A local checkout planned against the node's state: what a merge would
%% do (the `flux diff' of a pull request).
-spec plan_dir(string(), node(), map()) -> 0 | 2.
plan_dir(Dir, Node, O) ->
    Config = case call(Node, bc_gitops_reconciler, config, [], ?SHORT) of
                 {ok, C} -> C;
                 {error, Why} -> die("plan: ~ts", [reason(Why)])
             end,
    AppsDir = maps:get(apps_dir, O, text(maps:get(apps_dir, Config))),
    #{specs := Specs, errors := Errors} = Parsed = read_specs(Dir, AppsDir),
    Placed = case Config of
                 #{cluster := #{}} ->
                     [S || #app_spec{placement = P} = S <- Specs,
                           bc_gitops_placement:matches(P, Node)];
                 _ ->
                     Specs
             end,
    Current = case call(Node, bc_gitops, get_current_state, [], ?SHORT) of
                  {ok, Cur} -> Cur;
                  {error, Why2} -> die("plan: ~ts", [reason(Why2)])
              end,
    diagnostics("spec error", Errors),
    diagnostics("warning", maps:get(warnings, Parsed)),
    {ok, Plan} = bc_gitops_plan:plan(Placed, Current, [A || #{app := A} <- Errors]),
    show_plan(Plan, O).

%%% reconcile

-spec reconciled(term(), node(), map()) -> 0 | 2.
reconciled(ok, Node, O) ->
    {ok, #{last_commit := Commit}} = call(Node, bc_gitops, status, [], ?SHORT),
    done(O, #{result => ok, commit => Commit}, "in sync at ~ts~n", [short(Commit)]);
reconciled({error, {out_of_sync, Details}}, _Node, #{json := true}) ->
    json(#{result => out_of_sync, details => Details}),
    2;
reconciled({error, {out_of_sync, Details}}, _Node, _O) ->
    out("out of sync:\n"),
    _ = [out(io_lib:format("  ~ts failed: ~ts~n", [App, reason(Why)]))
         || {App, Why} <- maps:get(failed, Details, [])],
    _ = [out(io_lib:format("  ~ts waits: ~ts~n", [App, waiting_text(Why)]))
         || {App, Why} <- maps:get(waiting, Details, [])],
    _ = [out(io_lib:format("  ~ts blocked: ~ts~n", [text(App), blocked_text(Why)]))
         || {App, Why} <- maps:get(blocked, Details, [])],
    _ = [out(io_lib:format("  spec error: ~ts~n", [bc_gitops_specs:format_diagnostic(D)]))
         || D <- maps:get(spec_errors, Details, [])],
    2;
reconciled({error, Why}, _Node, _O) ->
    die("reconcile failed: ~ts", [reason(Why)]).

%%% history

-spec show_history([map()], map()) -> 0.
show_history(Entries, #{json := true}) ->
    json(Entries),
    0;
show_history([], _O) ->
    out("no history yet\n"),
    0;
show_history(Entries, _O) ->
    Clustered = lists:any(fun(E) -> maps:is_key(node, E) end, Entries),
    Head = ["AT (UTC)", "APP", "ACTION", "FROM", "TO", "RESULT", "PATH", "MS", "COMMIT"]
        ++ ["NODE" || Clustered],
    table(Head,
          [[time(At), App, Action, From, To, result_text(Result), Path, Ms, short(Commit)]
           ++ [maps:get(node, E, undefined) || Clustered]
           || #{at := At, app := App, action := Action, from := From, to := To,
                result := Result, path := Path, duration_ms := Ms, commit := Commit} = E
                  <- Entries]),
    0.

-spec result_text(term()) -> iodata().
result_text(ok) -> "ok";
result_text({error, Why}) -> ["error: ", reason(Why)];
result_text(Other) -> reason(Other).

%%% cluster

-spec show_cluster(map(), map()) -> 0.
show_cluster(Cluster, #{json := true}) ->
    json(Cluster),
    0;
show_cluster(#{coordinator := Coord, commit := Commit, members := Members,
               rollouts := Rollouts} = Cluster, _O) ->
    out(io_lib:format("coordinator ~ts, target commit ~ts~n~n", [Coord, short(Commit)])),
    table(["MEMBER", "STATE", "COMMIT", "APPS"],
          [[M, State, short(C),
            lists:join(", ", [io_lib:format("~ts ~ts ~ts", [A, text(V), St])
                              || {A, #{version := V, status := St}}
                                     <- lists:sort(maps:to_list(Apps))])]
           || {M, #{state := State, commit := C, apps := Apps}} <- lists:sort(maps:to_list(Members))]),
    out("\n"),
    _ = [out(io_lib:format("pinned: ~ts at ~ts (~ts)~n", [A, V, R]))
         || {A, #{version := V, reason := R}} <- lists:sort(maps:to_list(maps:get(pins, Cluster, #{})))],
    case Rollouts of
        [] ->
            out("no rollouts\n");
        _ ->
            table(["ROLLOUT", "FROM", "TO", "STATE", "DONE", "CURRENT", "PENDING", "REASON"],
                  [[A, F, T, S, length(D), length(C), length(P),
                    case R of undefined -> ""; _ -> reason(R) end]
                   || #{app := A, from := F, to := T, state := S, done := D, current := C,
                        pending := P, reason := R} <- Rollouts])
    end,
    0.

%%% validate: offline

-spec validate(string(), map()) -> 0 | 1.
validate(Dir, O) ->
    AppsDir = maps:get(apps_dir, O, "apps"),
    #{specs := Specs, errors := Errors, warnings := Warnings} = read_specs(Dir, AppsDir),
    {ok, #{blocked := Blocked}} = bc_gitops_plan:plan(Specs, [], [A || #{app := A} <- Errors]),
    %% Apps blocked only because their own spec is invalid are already
    %% among the errors; cycles and missing dependencies are errors too.
    Problems = [{App, B} || {App, B} <- Blocked, B =/= invalid_spec,
                            element(1, B) =:= cycle orelse element(1, B) =:= missing_dependency],
    Failed = Errors =/= [] orelse Problems =/= [],
    case O of
        #{json := true} ->
            json(#{valid => not Failed, apps => length(Specs), errors => Errors,
                   warnings => Warnings,
                   cycles => lists:usort([lists:sort(C) || {_, {cycle, C}} <- Problems]),
                   missing_dependencies => [#{app => App, missing => D}
                                            || {App, {missing_dependency, D}} <- Problems],
                   blocked => [#{app => App, reason => iolist_to_binary(blocked_text(B))}
                               || {App, B} <- Blocked]});
        _ ->
            _ = [out(io_lib:format("~ts~n", [bc_gitops_specs:format_diagnostic(D)]))
                 || D <- Errors],
            _ = [out(io_lib:format("warning: ~ts~n", [bc_gitops_specs:format_diagnostic(W)]))
                 || W <- Warnings],
            _ = [out(io_lib:format("cycle: ~ts~n",
                                   [lists:join(" -> ", [text(A) || A <- C ++ [hd(C)]])]))
                 || C <- lists:usort([C || {_, {cycle, C}} <- Problems])],
            _ = [out(io_lib:format("~ts: depends on ~ts, which is not in the repository~n",
                                   [text(App), text(D)]))
                 || {App, {missing_dependency, D}} <- Problems],
            out(io_lib:format("~B app~ts, ~B error~ts, ~B warning~ts~ts~n",
                              [length(Specs), plural(length(Specs)), length(Errors),
                               plural(length(Errors)), length(Warnings), plural(length(Warnings)),
                               case Problems of
                                   [] -> "";
                                   _ -> io_lib:format(", ~B blocked by cycles or missing "
                                                      "dependencies", [length(Problems)])
                               end]))
    end,
    case Failed of
        true -> 1;
        false -> 0
    end.

%% The specs of a checkout, with the node's own parser.
-spec read_specs(string(), string()) -> bc_gitops_specs:parse_result().
read_specs(Dir, AppsDir) ->
    case bc_gitops_nif:load_error() of
        ok -> ok;
        {error, Why} -> die("cannot load the NIF: ~0tp (build it with make)", [Why])
    end,
    filelib:is_dir(Dir) orelse die("~ts is not a directory", [Dir]),
    case bc_gitops_specs:parse_dir(Dir, AppsDir) of
        {ok, Parsed} -> Parsed;
        {error, {_Kind, Message}} -> die("~ts: ~ts", [Dir, Message])
    end.

%%% Connecting

-spec connect(map()) -> node().
connect(#{node := Name} = O) ->
    {Alive, Host} = case string:split(Name, "@") of
                        [A, H] when A =/= "", H =/= "" -> {A, H};
                        _ -> die("--node must be NAME@HOST, not ~ts", [Name])
                    end,
    Node = list_to_atom(Name),
    Cookie = list_to_atom(cookie(O)),
    ok = start_distribution(Host),
    true = erlang:set_cookie(Node, Cookie),
    case net_kernel:connect_node(Node) of
        true -> Node;
        _ -> die(unreachable(Alive, Host, Node))
    end;
connect(_O) ->
    die("which node? give --node NAME@HOST").

%% Why a node could not be reached, from what epmd on its host says.
-spec unreachable(string(), string(), node()) -> iolist().
unreachable(Alive, Host, Node) ->
    Self = self(),
    Pid = spawn(fun() -> Self ! {self(), catch erl_epmd:names(Host)} end),
    receive
        {Pid, {ok, Names}} ->
            case lists:keymember(Alive, 1, Names) of
                true -> io_lib:format("~ts refused the connection: wrong cookie?", [Node]);
                false -> io_lib:format("cannot reach ~ts: no node ~ts runs on ~ts", [Node, Alive, Host])
            end;
        {Pid, _} ->
            io_lib:format("cannot reach ~ts: no epmd answers on ~ts", [Node, Host])
    after 5000 ->
        exit(Pid, kill),
        io_lib:format("cannot reach ~ts: ~ts does not answer", [Node, Host])
    end.

%% This program as a hidden node (the script starts the VM with
%% `-hidden') of a unique name, of the target's kind of names.
-spec start_distribution(string()) -> ok.
start_distribution(Host) ->
    Unique = "bc_gitops_cli_" ++ os:getpid() ++ "_"
        ++ integer_to_list(erlang:unique_integer([positive])),
    Long = string:find(Host, ".") =/= nomatch orelse string:find(Host, ":") =/= nomatch,
    Names = case Long of
                true -> [{Unique, longnames}, {Unique ++ "@127.0.0.1", longnames}];
                false -> [{Unique, shortnames}]
            end,
    start_distribution(Names, undefined).

-spec start_distribution([{string(), longnames | shortnames}], term()) -> ok.
start_distribution([], Why) ->
    die("cannot start distribution (is epmd running? `epmd -daemon' starts it): ~0tp", [Why]);
start_distribution([{Name, Kind} | Rest], _Why) ->
    case net_kernel:start([list_to_atom(Name), Kind]) of
        {ok, _} -> ok;
        {error, Why} -> start_distribution(Rest, Why)
    end.

%% The cookie: --cookie, else $RELEASE_COOKIE, else ~/.erlang.cookie.
-spec cookie(map()) -> string().
cookie(#{cookie := Cookie}) when Cookie =/= "" ->
    Cookie;
cookie(_O) ->
    case os:getenv("RELEASE_COOKIE") of
        Env when is_list(Env), Env =/= "" ->
            Env;
        _ ->
            File = case os:getenv("HOME") of
                       Home when is_list(Home), Home =/= "" -> filename:join(Home, ".erlang.cookie");
                       _ -> die("no cookie: give --cookie or set $RELEASE_COOKIE")
                   end,
            case file:read_file(File) of
                {ok, Bin} ->
                    case string:trim(unicode:characters_to_list(Bin)) of
                        "" -> die("~ts is empty", [File]);
                        C -> C
                    end;
                {error, _} ->
                    die("no cookie: give --cookie, set $RELEASE_COOKIE or create ~ts", [File])
            end
    end.

%% A call on the node; what goes wrong on the way is one clear line.
-spec call(node(), module(), atom(), list(), timeout()) -> term().
call(Node, M, F, A, Timeout) ->
    try erpc:call(Node, M, F, A, Timeout) of
        {error, not_running} -> die("bc_gitops is not running on ~ts", [Node]);
        Result -> Result
    catch
        error:{erpc, noconnection} -> die("lost the connection to ~ts", [Node]);
        error:{erpc, timeout} -> die("~ts did not answer in time", [Node]);
        error:{exception, undef, [{M, F, _, _} | _]} ->
            die("bc_gitops is not loaded on ~ts (~ts:~ts/~B is missing)", [Node, M, F, length(A)]);
        error:{exception, badarg, _} when M =:= erlang -> die("badarg");
        exit:{exception, {noproc, _}} -> die("bc_gitops is not running on ~ts", [Node]);
        Class:{exception, Reason, _} -> die("~ts:~ts failed on ~ts: ~0tp", [M, F, Node, {Class, Reason}])
    end.

%%% Text

-spec waiting_text(term()) -> iodata().
waiting_text({pinned, V}) -> ["pinned at ", V];
waiting_text({backoff, N, Ms}) -> io_lib:format("backoff: attempt ~B, retry in ~ts", [N, ms(Ms)]);
waiting_text({dependency_not_ready, D}) -> ["dependency ", text(D), " not ready"];
waiting_text({rolled_back, V}) -> [V, " rolled back: held until its spec changes"];
waiting_text({drift, S}) -> ["drift: ", text(S), " (self_heal is off)"];
waiting_text({in_progress, S}) -> ["in progress: ", text(S)];
waiting_text(superseded) -> "superseded by a newer commit";
waiting_text(Other) -> reason(Other).

-spec blocked_text(term()) -> iodata().
blocked_text({cycle, Apps}) -> ["dependency cycle ", lists:join(" -> ", [text(A) || A <- Apps])];
blocked_text({missing_dependency, D}) -> ["depends on ", text(D), ", not in the repository"];
blocked_text({invalid_dependency, D}) -> ["depends on ", text(D), ", whose spec is invalid"];
blocked_text({dependency_blocked, D}) -> ["depends on ", text(D), ", which is blocked"];
blocked_text(invalid_spec) -> "its spec is invalid (it keeps running as it is)";
blocked_text(Other) -> reason(Other).

-spec path_text(term()) -> string().
path_text(undefined) -> "";
path_text(rollout) -> " (rolling out, batch by batch)";
path_text(Path) -> " (" ++ atom_to_list(Path) ++ ")".

%% A reason in one line, readable without record syntax, at most 200
%% characters.
-spec reason(term()) -> iodata().
reason(not_found) -> "unknown app";
reason({no_previous_version, App}) -> io_lib:format("no previous version of ~ts is known", [App]);
reason({already_rolled_back, App}) ->
    io_lib:format("its last change was a rollback: `bc_gitops unpin ~ts' follows git again", [App]);
reason({not_pinned, App}) -> io_lib:format("~ts is not pinned", [App]);
reason({already_pinned, App}) -> io_lib:format("~ts is pinned already", [App]);
reason({rollout_in_progress, App}) ->
    io_lib:format("a rollout of ~ts is under way (see bc_gitops cluster); try once it is done",
                  [App]);
reason({no_quorum, Up, Members}) ->
    io_lib:format("~B of the ~B members answer, not a majority", [length(Up), length(Members)]);
reason({unhealthy, Why}) -> ["unhealthy: ", reason(Why)];
reason({rolled_back, Why}) -> ["rolled back: ", reason(Why)];
reason(B) when is_binary(B) -> clip(B);
reason(A) when is_atom(A) -> atom_to_list(A);
reason(Other) -> clip(iolist_to_binary(io_lib:format("~0tp", [Other]))).

-spec clip(binary()) -> binary().
clip(B) when byte_size(B) =< 200 -> B;
clip(B) -> <<(binary:part(B, 0, 197))/binary, "...">>.

-spec text(term()) -> iodata().
text(undefined) -> "-";
text(B) when is_binary(B) -> B;
text(A) when is_atom(A) -> atom_to_binary(A, utf8);
text(I) when is_integer(I) -> integer_to_list(I);
text(L) when is_list(L) -> L;
text(Other) -> io_lib:format("~0tp", [Other]).

-spec short(binary() | undefined) -> iodata().
short(<<Short:7/binary, _/binary>>) -> Short;
short(Other) -> text(Other).

-spec time(integer() | undefined) -> iodata().
time(undefined) -> "never";
time(Ms) ->
    {{Y, Mo, D}, {H, Mi, S}} = calendar:system_time_to_universal_time(Ms, millisecond),
    io_lib:format("~4..0B-~2..0B-~2..0B ~2..0B:~2..0B:~2..0B", [Y, Mo, D, H, Mi, S]).

-spec ms(integer()) -> string().
ms(Ms) when Ms < 1000 -> integer_to_list(Ms) ++ " ms";
ms(Ms) -> float_to_list(Ms / 1000, [{decimals, 1}]) ++ " s".

-spec plural(integer()) -> string().
plural(1) -> "";
plural(_) -> "s".

%%% Output

-spec out(iodata()) -> ok.
out(Text) ->
    Lines = string:split(unicode:characters_to_list(Text), "\n", all),
    io:put_chars(standard_io, unicode:characters_to_binary(
                                lists:join("\n", lists:append([bc_gitops_text:wrap(L, ?WIDTH) || L <- Lines])))).

%% JSON is one line, never wrapped.
-spec json(term()) -> ok.
json(Term) ->
    io:put_chars(standard_io, [bc_gitops_json:encode(Term), $\n]).

%% A table no wider than 100 columns: the widest cells are cut (ending in
%% `..') until it fits.
-spec table([string()], [[term()]]) -> ok.
table(Head, Rows) ->
    Cells = [[unicode:characters_to_list(text_cell(C)) || C <- Row] || Row <- [Head | Rows]],
    Widths = fit([lists:max([string:length(lists:nth(I, R)) || R <- Cells])
                  || I <- lists:seq(1, length(Head))]),
    _ = [out([string:trim(lists:join("  ", [pad(C, W) || {C, W} <- lists:zip(Row, Widths)]),
                          trailing), $\n])
         || Row <- Cells],
    ok.

-spec text_cell(term()) -> iodata().
text_cell(C) when is_list(C) -> C;
text_cell(C) -> text(C).

-spec fit([non_neg_integer()]) -> [non_neg_integer()].
fit(Widths) ->
    case lists:sum(Widths) + 2 * (length(Widths) - 1) of
        Total when Total =< ?WIDTH -> Widths;
        _ ->
            Max = lists:max(Widths),
            {Before, [Max | After]} = lists:splitwith(fun(W) -> W =/= Max end, Widths),
            fit(Before ++ [Max - 1 | After])
    end.

-spec pad(string(), non_neg_integer()) -> string().
pad(Cell, Width) ->
    case string:length(Cell) of
        L when L =< Width -> Cell ++ lists:duplicate(Width - L, $\s);
        _ -> string:slice(Cell, 0, max(0, Width - 2)) ++ ".."
    end.
