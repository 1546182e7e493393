%%% Peer nodes for `make demo', `make bench' and the cluster tests: BEAM
%%% nodes on 127.0.0.1
%%% (OTP `peer', controlled over their standard I/O), each running
%%% bc_gitops and keeping its telemetry events with the system time, so
%%% that the events of several nodes can be put in one timeline.
%%%
%%% Not part of the application: demo.escript and bench.escript compile
%%% it (with the tests' stand-in `telemetry' module) into a directory the
%%% peers have on their code path; the tests use boot/2 and events/0 on
%%% their own peers (bc_gitops_test_cluster).
-module(bc_gitops_peers).

-export([compile/2, start/2, stop/1, call/4, boot/2, events/0, event/4]).

-define(EVENTS, bc_gitops_peers_events).

%% Compiles this module and the telemetry stand-in of `Root' into `Out',
%% and puts `Out' on this node's code path.
-spec compile(file:filename(), file:filename()) -> ok.
compile(Root, Out) ->
    ok = filelib:ensure_path(Out),
    [{ok, _} = compile:file(filename:join(Root, Src), [{outdir, Out}, report])
     || Src <- ["test/bc_gitops_peers.erl", "test/telemetry.erl"]],
    true = code:add_patha(Out),
    ok.

%% Starts a peer node `Name'@127.0.0.1 for each name, with `Paths' on its
%% code path.
-spec start([string()], [file:filename()]) -> [{node(), pid()}].
start(Names, Paths) ->
    Cookie = "bc_gitops_peers_" ++ os:getpid(),
    [begin
         {ok, Peer, Node} = peer:start(#{name => Name, host => "127.0.0.1", longnames => true,
                                         connection => standard_io,
                                         %% Their notices (who coordinates)
                                         %% would come out among the demo's.
                                         args => ["-setcookie", Cookie,
                                                  "-kernel", "logger_level", "warning" |
                                                  lists:append([["-pa", P] || P <- Paths])],
                                         wait_boot => 30000}),
         {Node, Peer}
     end || Name <- Names].

-spec stop([{node(), pid()}]) -> ok.
stop(Peers) ->
    _ = [catch peer:stop(P) || {_, P} <- Peers],
    ok.

-spec call({node(), pid()}, module(), atom(), list()) -> term().
call({_, Peer}, M, F, A) ->
    peer:call(Peer, M, F, A, 600000).

%% On a node: records `Events', then starts bc_gitops with `Config'.
-spec boot(map(), [[atom()]]) -> ok.
boot(Config, Events) ->
    Self = self(),
    spawn(fun() ->
                  ets:new(?EVENTS, [named_table, public, ordered_set]),
                  Self ! ready,
                  receive stop -> ok end
          end),
    receive ready -> ok end,
    ok = telemetry:attach_many(?MODULE, Events, fun ?MODULE:event/4, none),
    {ok, _} = application:ensure_all_started(bc_gitops),
    {ok, _} = bc_gitops:start_reconciler(Config),
    ok.

%% @private Keeps one event: {SystemTimeUs, Node, Event, Metadata}.
event(Event, _Measurements, Meta, _) ->
    ets:insert(?EVENTS, {erlang:unique_integer([monotonic]),
                         {erlang:system_time(microsecond), node(), Event, Meta}}).

%% On a node: the events kept so far, in order.
-spec events() -> [{integer(), node(), [atom()], map()}].
events() ->
    [E || {_, E} <- ets:tab2list(?EVENTS)].
