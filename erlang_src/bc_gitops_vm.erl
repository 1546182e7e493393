%%% @doc The guests: one BEAM node of its own for each `isolation => vm'
%%% app, started with OTP's `peer' (command line in
%%% {@link bc_gitops_vm_command}) and owned by this server.
%%%
%%% A guest lives no longer than bc_gitops: its `peer' control process is
%%% linked to this server, which stops every guest when it stops (with the
%%% application), and a guest halts by itself when its control connection
%%% (its standard input) closes, so a host killed outright takes its
%%% guests with it. A guest is stopped when its app is removed, restarted
%%% or moved out.
%%%
%%% A guest that dies (killed, or over its memory limit) is marked down
%%% here, with why: the exit status of its emulator and, when it wrote
%%% one, the first line (the slogan) of its crash dump, kept as
%%% `<dir>/<app>.erl_crash.dump'. The runtime then reports its app
%%% `failed', and the reconciler heals that drift as any other (with its
%%% repair backoff). Events: `[bc_gitops, vm, up]' (measurement
%%% `boot_time', native units; metadata `app', `node', `os_pid') and
%%% `[bc_gitops, vm, down]' (`app', `node', `reason': `stopped' when bc_gitops
%%% stopped it).
%%%
%%% What is known of each guest is in an ETS table, read without a call
%%% ({@link lookup/1}, {@link guests/0}).
-module(bc_gitops_vm).

-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").

-export([start_link/0, start/3, stop/1, lookup/1, guests/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(TABLE, ?MODULE).
%% How long a guest may take to boot (a loaded 2-core machine is slow).
-define(BOOT_TIMEOUT, 60000).
%% The control connection's calls right after boot.
-define(SETUP_TIMEOUT, 10000).
%% After a nodedown, how often and how long to wait for the control
%% process to learn the emulator's exit status.
-define(REAP_EVERY, 50).
-define(REAP_TRIES, 40).
-define(SLOGAN_BYTES, 4096).

-type reason() :: term().
-type guest() :: #{node := node(), status := booting | up | down, os_pid := string() | undefined,
                   reason := reason() | undefined, started_at := integer(),
                   vm_config := map() | undefined}.
-export_type([guest/0]).

%% A guest as this server holds it: its control process, and the caller
%% that waits for it to boot.
-record(g, {app :: atom(), pid :: pid(), node :: node() | undefined, dir :: file:filename(),
            tag :: reference(), waiting :: gen_server:from() | undefined,
            timer :: reference() | undefined, started :: integer()}).

%% @private
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Starts a guest for `App' (stopping the one it had, if any) with
%% `VmConfig', its crash dumps in `Dir'; returns when it has booted, with
%% its node name, or why it could not start.
-spec start(atom(), map() | undefined, file:filename()) -> {ok, node()} | {error, term()}.
start(App, VmConfig, Dir) ->
    ok = filelib:ensure_path(Dir),
    case bc_gitops_vm_command:peer_options(App, VmConfig, Dir) of
        {ok, Options} -> gen_server:call(?MODULE, {start, App, VmConfig, Dir, Options}, infinity);
        {error, Why} -> {error, {vm, Why}}
    end.

%% @doc Stops the guest of `App' (and waits for it to be gone), if it has
%% one.
-spec stop(atom()) -> ok.
stop(App) ->
    gen_server:call(?MODULE, {stop, App}, infinity).

%% @doc Where `App' runs: `{up, Node}' in a live guest; `{down, Node,
%% Why}' its guest died; `none' it has no guest (it runs in this node, if
%% anywhere).
-spec lookup(atom()) -> {up, node()} | {down, node(), reason()} | none.
lookup(App) ->
    try ets:lookup(?TABLE, App) of
        [{App, #{status := up, node := Node}}] -> {up, Node};
        [{App, #{status := down, node := Node, reason := Why}}] -> {down, Node, Why};
        _ -> none
    catch
        error:badarg -> none
    end.

%% @doc Every guest, by app: its node, `status' (`booting', `up' or
%% `down'), OS pid, why it went down, when it started (system time, ms)
%% and its vm_config.
-spec guests() -> #{atom() => guest()}.
guests() ->
    try maps:from_list(ets:tab2list(?TABLE))
    catch error:badarg -> #{}
    end.

%% @private
-spec init([]) -> {ok, #{atom() => #g{}}}.
init([]) ->
    process_flag(trap_exit, true),
    _ = ets:new(?TABLE, [named_table, protected, set]),
    {ok, #{}}.

%% @private
-spec handle_call(term(), gen_server:from(), #{atom() => #g{}}) ->
    {reply, term(), #{atom() => #g{}}} | {noreply, #{atom() => #g{}}}.
handle_call({start, App, VmConfig, Dir, Options}, From, Guests) ->
    Guests1 = halt_guest(App, Guests),
    Tag = make_ref(),
    %% With `host' given, peer names the node at once; it boots meanwhile.
    case catch peer:start_link(Options#{wait_boot => {self(), Tag}}) of
        {ok, Pid, Node} ->
            true = ets:insert(?TABLE, {App, #{node => Node, status => booting, os_pid => undefined,
                                              reason => undefined, vm_config => VmConfig,
                                              started_at => erlang:system_time(millisecond)}}),
            Timer = erlang:send_after(?BOOT_TIMEOUT, self(), {boot_timeout, App, Tag}),
            G = #g{app = App, pid = Pid, node = Node, dir = Dir, tag = Tag, waiting = From,
                   timer = Timer, started = erlang:monotonic_time()},
            {noreply, Guests1#{App => G}};
        Failed ->
            {reply, {error, {vm_boot_failed, Failed}}, Guests1}
    end;
handle_call({stop, App}, _From, Guests) ->
    {reply, ok, halt_guest(App, Guests)};
handle_call(_Request, _From, Guests) ->
    {reply, {error, unknown_call}, Guests}.

%% @private
-spec handle_cast(term(), #{atom() => #g{}}) -> {noreply, #{atom() => #g{}}}.
handle_cast(_Msg, Guests) ->
    {noreply, Guests}.

%% @private
-spec handle_info(term(), #{atom() => #g{}}) -> {noreply, #{atom() => #g{}}}.
handle_info({Tag, {started, Node, Pid}}, Guests) ->
    case find(fun(#g{tag = T, pid = P}) -> T =:= Tag andalso P =:= Pid end, Guests) of
        {ok, G} -> {noreply, booted(G#g{node = Node}, Guests)};
        error -> {noreply, Guests}
    end;
handle_info({Tag, {boot_failed, Why, Pid}}, Guests) ->
    case find(fun(#g{tag = T, pid = P}) -> T =:= Tag andalso P =:= Pid end, Guests) of
        {ok, G} -> {noreply, boot_failed(G, Why, Guests)};
        error -> {noreply, Guests}
    end;
handle_info({boot_timeout, App, Tag}, Guests) ->
    case Guests of
        #{App := #g{tag = Tag, waiting = W} = G} when W =/= undefined ->
            {noreply, boot_failed(G, timeout, Guests)};
        _ ->
            {noreply, Guests}
    end;
handle_info({nodedown, Node}, Guests) ->
    case find(fun(#g{node = N, waiting = W}) -> N =:= Node andalso W =:= undefined end, Guests) of
        {ok, #g{app = App}} ->
            update(App, #{status => down}),
            self() ! {reap, App, Node, ?REAP_TRIES},
            {noreply, Guests};
        error ->
            {noreply, Guests}
    end;
handle_info({reap, App, Node, Tries}, Guests) ->
    case Guests of
        #{App := #g{node = Node, pid = Pid} = G} ->
            case catch peer:get_state(Pid) of
                {down, Exit} -> {noreply, reaped(G, Exit, Guests)};
                _ when Tries > 0 ->
                    erlang:send_after(?REAP_EVERY, self(), {reap, App, Node, Tries - 1}),
                    {noreply, Guests};
                _ ->
                    {noreply, reaped(G, nodedown, Guests)}
            end;
        _ ->
            {noreply, Guests}
    end;
handle_info({'EXIT', Pid, Why}, Guests) ->
    %% A control process that ends by itself (it crashed): its guest halts
    %% with it.
    case find(fun(#g{pid = P}) -> P =:= Pid end, Guests) of
        {ok, #g{waiting = W} = G} when W =/= undefined ->
            {noreply, boot_failed(G, {control_exit, Why}, Guests)};
        {ok, #g{app = App, node = Node}} ->
            Reason = {control_exit, Why},
            update(App, #{status => down, reason => Reason}),
            down_event(App, Node, Reason),
            {noreply, maps:remove(App, Guests)};
        error ->
            {noreply, Guests}
    end;
handle_info(_Other, Guests) ->
    {noreply, Guests}.

%% @private Every guest is stopped with bc_gitops, side by side.
-spec terminate(term(), #{atom() => #g{}}) -> ok.
terminate(_Reason, Guests) ->
    Stoppers = [spawn_monitor(fun() -> catch peer:stop(Pid) end)
                || #g{pid = Pid} <- maps:values(Guests)],
    _ = [receive {'DOWN', Ref, process, P, _} -> ok end || {P, Ref} <- Stoppers],
    ok.

%%% Internals

%% The guest booted: the host's cookie, its OS pid (over the control
%% connection), a first distribution call that proves erpc reaches it,
%% and a watch on its node.
-spec booted(#g{}, #{atom() => #g{}}) -> #{atom() => #g{}}.
booted(#g{app = App, pid = Pid, node = Node, waiting = From, timer = Timer,
          started = Started} = G, Guests) ->
    ok = cancel(Timer),
    try
        true = peer:call(Pid, erlang, set_cookie, [erlang:get_cookie()], ?SETUP_TIMEOUT),
        OsPid = peer:call(Pid, os, getpid, [], ?SETUP_TIMEOUT),
        true = erlang:monitor_node(Node, true),
        Node = erpc:call(Node, erlang, node, [], ?SETUP_TIMEOUT),
        OsPid
    of
        Got ->
            update(App, #{status => up, os_pid => Got}),
            bc_gitops_telemetry:execute([bc_gitops, vm, up],
                                        #{boot_time => erlang:monotonic_time() - Started},
                                        #{app => App, node => Node, os_pid => Got}),
            gen_server:reply(From, {ok, Node}),
            Guests#{App => G#g{waiting = undefined, timer = undefined}}
    catch
        Class:Why ->
            boot_failed(G, {setup, Class, Why}, Guests)
    end.

-spec boot_failed(#g{}, term(), #{atom() => #g{}}) -> #{atom() => #g{}}.
boot_failed(#g{app = App, pid = Pid, node = Node, dir = Dir, waiting = From, timer = Timer},
            Why, Guests) ->
    ok = cancel(Timer),
    catch peer:stop(Pid),
    Reason = with_slogan(App, Node, Dir, Why),
    ets:delete(?TABLE, App),
    gen_server:reply(From, {error, {vm_boot_failed, Reason}}),
    maps:remove(App, Guests).

%% The guest died and its control process knows how: record it, release
%% the control process.
-spec reaped(#g{}, term(), #{atom() => #g{}}) -> #{atom() => #g{}}.
reaped(#g{app = App, pid = Pid, node = Node, dir = Dir}, Exit, Guests) ->
    catch peer:stop(Pid),
    Reason = with_slogan(App, Node, Dir, Exit),
    ?LOG_WARNING("bc_gitops: the guest ~p of ~p is down: ~p", [Node, App, Reason]),
    update(App, #{status => down, reason => Reason}),
    down_event(App, Node, Reason),
    maps:remove(App, Guests).

%% Stops the guest of `App', if it has one, and forgets it.
-spec halt_guest(atom(), #{atom() => #g{}}) -> #{atom() => #g{}}.
halt_guest(App, Guests) ->
    case maps:take(App, Guests) of
        {#g{pid = Pid, node = Node, waiting = From, timer = Timer}, Rest} ->
            _ = erlang:monitor_node(Node, false),
            ok = cancel(Timer),
            catch peer:stop(Pid),
            _ = [gen_server:reply(From, {error, {vm_boot_failed, stopped}}) || From =/= undefined],
            ets:delete(?TABLE, App),
            down_event(App, Node, stopped),
            Rest;
        error ->
            ets:delete(?TABLE, App),
            Guests
    end.

%% `Why', with the slogan of the crash dump the guest wrote, if it wrote
%% one; the dump is kept as `<app>.erl_crash.dump'.
-spec with_slogan(atom(), node(), file:filename(), term()) -> term().
with_slogan(App, Node, Dir, Why) ->
    Dump = bc_gitops_vm_command:dump_file(Dir, Node),
    case file:open(Dump, [read, binary, raw]) of
        {ok, F} ->
            Head = file:read(F, ?SLOGAN_BYTES),
            ok = file:close(F),
            _ = file:rename(Dump, filename:join(Dir, atom_to_list(App) ++ ".erl_crash.dump")),
            case Head of
                {ok, Bin} -> {Why, slogan(Bin)};
                _ -> Why
            end;
        {error, _} ->
            Why
    end.

-spec slogan(binary()) -> binary().
slogan(Bin) ->
    case re:run(Bin, "^Slogan: (.*)$", [multiline, {capture, all_but_first, binary}]) of
        {match, [Slogan]} -> Slogan;
        nomatch -> <<"crash dump without a slogan">>
    end.

-spec cancel(reference() | undefined) -> ok.
cancel(undefined) -> ok;
cancel(Timer) -> _ = erlang:cancel_timer(Timer), ok.

-spec update(atom(), map()) -> true.
update(App, Changes) ->
    case ets:lookup(?TABLE, App) of
        [{App, Guest}] -> ets:insert(?TABLE, {App, maps:merge(Guest, Changes)});
        [] -> true
    end.

-spec down_event(atom(), node(), term()) -> ok.
down_event(App, Node, Reason) ->
    bc_gitops_telemetry:execute([bc_gitops, vm, down], #{},
                                #{app => App, node => Node, reason => Reason}).

-spec find(fun((#g{}) -> boolean()), #{atom() => #g{}}) -> {ok, #g{}} | error.
find(Pred, Guests) ->
    case [G || G <- maps:values(Guests), Pred(G)] of
        [G | _] -> {ok, G};
        [] -> error
    end.
