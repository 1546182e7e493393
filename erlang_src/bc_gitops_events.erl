%%% @doc The latest events of this node, for the status page: the last
%%% 100 deploys, upgrades, removes, rollbacks, repairs, failed reconciles
%%% and webhooks, newest first, each as one line of text.
%%%
%%% Fed by {@link observe/3} from {@link bc_gitops_telemetry:execute/3}, in
%%% the process that emits the event (one `ets:insert/2'); the table is
%%% bc_gitops_sup's. Kept in memory only.
-module(bc_gitops_events).

-export([new/0, observe/3, latest/1]).

-export_type([event/0]).

-define(TABLE, bc_gitops_events).
-define(KEEP, 100).
-define(MAX_TEXT, 300).

-type level() :: info | warning | error.
-type event() :: #{at := integer(), level := level(), text := binary()}.

%% @doc Creates the table; the calling process owns it.
-spec new() -> ok.
new() ->
    _ = ets:new(?TABLE, [named_table, public, ordered_set]),
    ok.

%% @doc Records `Event' when it is one worth a line. Never raises.
-spec observe([atom(), ...], map(), map()) -> ok.
observe(Event, Measurements, Meta) ->
    case line(Event, Measurements, Meta) of
        none ->
            ok;
        {Level, Text} ->
            Key = erlang:unique_integer([monotonic, positive]),
            Row = {Key, erlang:system_time(millisecond), Level, shorten(Text)},
            try
                true = ets:insert(?TABLE, Row),
                trim(ets:info(?TABLE, size) - ?KEEP)
            catch
                error:badarg -> ok
            end
    end.

%% @doc The latest `N' events, newest first.
-spec latest(pos_integer()) -> [event()].
latest(N) ->
    try latest(ets:last(?TABLE), N)
    catch error:badarg -> []
    end.

-spec latest(term(), non_neg_integer()) -> [event()].
latest('$end_of_table', _N) ->
    [];
latest(_Key, 0) ->
    [];
latest(Key, N) ->
    case ets:lookup(?TABLE, Key) of
        [{Key, At, Level, Text}] ->
            [#{at => At, level => Level, text => Text} | latest(ets:prev(?TABLE, Key), N - 1)];
        [] ->
            latest(ets:prev(?TABLE, Key), N)
    end.

-spec trim(integer()) -> ok.
trim(Over) when Over > 0 ->
    case ets:first(?TABLE) of
        '$end_of_table' -> ok;
        First -> ets:delete(?TABLE, First), trim(Over - 1)
    end;
trim(_) ->
    ok.

-spec shorten(iodata()) -> binary().
shorten(Text) ->
    Bin = unicode:characters_to_binary(Text),
    case string:length(Bin) > ?MAX_TEXT of
        true -> unicode:characters_to_binary([string:slice(Bin, 0, ?MAX_TEXT - 3), "..."]);
        false -> Bin
    end.

-spec line([atom(), ...], map(), map()) -> {level(), iodata()} | none.
line([bc_gitops, Kind, stop], _, #{app := App, result := Result} = Meta)
  when Kind =:= deploy; Kind =:= upgrade; Kind =:= reconfigure; Kind =:= remove ->
    What = [atom_to_list(Kind), " ", atom_to_list(App), versions(Meta), path(Meta)],
    result(What, Result);
line([bc_gitops, rollback, stop], _, #{app := App, from_version := From, to_version := To,
                                      reason := Why}) ->
    {warning, io_lib:format("rolled back ~ts from ~ts to ~ts: ~ts",
                            [App, From, To, bc_gitops_json:text(Why)])};
line([bc_gitops, gate, stop], _, #{app := App, version := V, result := {unhealthy, Why}}) ->
    {warning, io_lib:format("~ts ~ts did not become healthy: ~ts",
                            [App, V, bc_gitops_json:text(Why)])};
line([bc_gitops, drift, detected], _, #{app := App, status := Status, healed := Healed}) ->
    {warning, io_lib:format("~ts found ~ts~ts",
                            [App, Status, case Healed of true -> "; restarting"; false -> "" end])};
line([bc_gitops, reconcile, error], _, #{error := Why}) ->
    {error, ["reconcile failed: ", bc_gitops_json:text(Why)]};
line([bc_gitops, reconcile, stop], _, #{changes := [_ | _] = Changes, status := Status} = Meta) ->
    {info, io_lib:format("reconciled ~ts: ~p change~ts, ~ts",
                         [short(maps:get(commit, Meta, undefined)), length(Changes),
                          case Changes of [_] -> ""; _ -> "s" end, Status])};
line([bc_gitops, webhook, received], _, #{source := Source, result := Result}) ->
    {case Result of unauthorized -> warning; _ -> info end,
     io_lib:format("webhook from ~ts: ~ts", [Source, Result])};
line([bc_gitops, rollout, Step], _, #{app := App} = Meta) when Step =:= start; Step =:= stop ->
    {info, io_lib:format("rollout of ~ts ~ts: ~ts",
                         [App, Step, bc_gitops_json:text(maps:get(result, Meta, started))])};
line(_Event, _Measurements, _Meta) ->
    none.

-spec result(iodata(), term()) -> {level(), iodata()}.
result(What, ok) -> {info, What};
result(What, {error, Why}) -> {error, [What, " failed: ", bc_gitops_json:text(Why)]};
result(What, Other) -> {info, [What, ": ", bc_gitops_json:text(Other)]}.

-spec versions(map()) -> iodata().
versions(#{from_version := From, to_version := To}) ->
    [" ", bc_gitops_json:text(From), " -> ", bc_gitops_json:text(To)];
versions(#{version := V}) ->
    [" ", bc_gitops_json:text(V)];
versions(_) ->
    [].

-spec path(map()) -> iodata().
path(#{path := Path}) -> [" (", atom_to_list(Path), ")"];
path(_) -> [].

-spec short(binary() | undefined) -> iodata().
short(<<Short:8/binary, _/binary>>) -> Short;
short(undefined) -> "?";
short(Other) -> Other.
