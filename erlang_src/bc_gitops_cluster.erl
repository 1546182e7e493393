%%% @doc A node's part in cluster mode: it keeps in touch with the other
%%% members, knows the coordinator, and becomes it when there is none.
%%%
%%% The coordinator is whichever member's {@link bc_gitops_coordinator}
%%% registered the cluster's `global' name first; every other member
%%% monitors it, and when it goes (its node died or was cut off), each
%%% tries at once to register its own, and `global' lets exactly one win.
%%% Members that are not connected are connected to every second, so a
%%% member that restarts or joins late finds the cluster by itself. A
%%% coordinator found on a node that is not a member is not trusted.
-module(bc_gitops_cluster).

-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").
-include("bc_gitops.hrl").

-export([start_link/1, coordinator/0, info/0, reconcile/0, plan/0, status/0, tell/0,
         history/1, rollback/1, pin/1, unpin/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, format_status/1]).

-define(SERVER, ?MODULE).
%% How often a member without a coordinator, or with members not
%% connected, tries again.
-define(RETRY_MS, 1000).

-record(st, {
    config :: bc_gitops_config:config(),
    members :: [node()],
    name :: term(),
    %% The coordinator, its monitor, and whether it is this node's own.
    coordinator :: {pid(), reference()} | undefined,
    own :: pid() | undefined,
    %% The process connecting to members not connected, while it runs.
    connector :: pid() | undefined
}).

%% @doc Starts this node's part; `Config' has a `cluster' map.
-spec start_link(bc_gitops_config:config()) -> {ok, pid()} | {error, term()}.
start_link(Config) ->
    gen_server:start_link({local, ?SERVER}, ?MODULE, Config, []).

%% @doc The coordinator's pid, as this member knows it.
-spec coordinator() -> {ok, pid()} | {error, no_coordinator | not_clustered}.
coordinator() ->
    call(coordinator, 5000).

%% @doc Has this node's reconciler told (again) which coordinator to
%% report to, when one is known.
-spec tell() -> ok.
tell() ->
    gen_server:cast(?SERVER, tell).

%% @doc `#{coordinator => Node | undefined, role => coordinator | member}'.
-spec info() -> map() | undefined.
info() ->
    case call(info, 5000) of
        {ok, Info} -> Info;
        {error, _} -> undefined
    end.

%% @doc Asks the coordinator for a reconcile of the cluster, waits until
%% this member has converged to its result, and returns this member's own
%% reconcile result (as {@link bc_gitops:reconcile/0}). A coordinator
%% that dies meanwhile is asked again once another has taken over.
-spec reconcile() -> ok | {error, term()}.
reconcile() ->
    case ask(reconcile, 20) of
        converged -> bc_gitops_reconciler:run(reconcile, infinity);
        {error, _} = Error -> Error
    end.

%% @doc This member's part of the plan: the coordinator's parse of the
%% branch now, placed on this node, planned against this node's state.
-spec plan() -> {ok, bc_gitops_plan:plan()} | {error, term()}.
plan() ->
    case ask(plan, 20) of
        {ok, #{specs := Specs, errors := Errors}} ->
            case {bc_gitops:get_current_state(), bc_gitops_reconciler:config()} of
                {{ok, Current}, {ok, Config}} ->
                    bc_gitops_plan:plan(Specs, Current, [A || #{app := A} <- Errors],
                                        maps:with([age_identity], Config));
                {{ok, _}, Error} -> Error;
                {Error, _} -> Error
            end;
        {error, _} = Error ->
            Error
    end.

%% @doc The cluster as the coordinator sees it.
-spec status() -> {ok, map()} | {error, term()}.
status() ->
    coordinator_call(status).

%% @doc The history of every member that answers (within 5 s), merged,
%% newest first, the latest 200; each entry names its node.
-spec history(all | atom()) -> {ok, [map()]} | {error, term()}.
history(Which) ->
    case bc_gitops_reconciler:config() of
        {ok, #{cluster := #{members := Members}}} ->
            Up = [M || M <- Members, M =:= node() orelse lists:member(M, nodes())],
            Answers = erpc:multicall(Up, bc_gitops_reconciler, history, [Which], 5000),
            Entries = lists:append([E || {ok, {ok, E}} <- Answers]),
            Newest = lists:sort(fun(#{at := A}, #{at := B}) -> A >= B end, Entries),
            {ok, lists:sublist(Newest, bc_gitops_history:limit())};
        {ok, _} ->
            {error, not_clustered};
        Error ->
            Error
    end.

%% @doc Rolls `App' back on every member to the spec that settled before
%% the one the cluster runs (a member that runs it kept it), and pins it
%% there: the coordinator rolls that spec out batch by batch, with the
%% usual gates, and keeps it until git changes the app's spec or {@link
%% unpin/1}. Returns once the pin is made: `{ok, #{app, from, to, path
%% => rollout}}'. Refused while a rollout of the app runs, and without a
%% majority of the members.
-spec rollback(atom()) -> {ok, map()} | {error, term()}.
rollback(App) ->
    case settled(App, rollback) of
        {ok, _Current, undefined, _Digest} ->
            {error, {no_previous_version, App}};
        {ok, #app_spec{version = From}, #app_spec{version = To} = Before, Digest} ->
            case coordinator_call({pin, App, Before, rollback, Digest}) of
                ok -> {ok, #{app => App, from => From, to => To, path => rollout}};
                Error -> Error
            end;
        Error ->
            Error
    end.

%% @doc Pins `App' on every member at the spec the cluster runs: `{ok,
%% Vsn}'. Refused while a rollout of it runs, and when it is pinned
%% already (`{error, {already_pinned, App}}').
-spec pin(atom()) -> {ok, binary()} | {error, term()}.
pin(App) ->
    case settled(App, pin) of
        {ok, #app_spec{version = V} = Current, _Before, Digest} ->
            case coordinator_call({pin, App, Current, pin, Digest}) of
                ok -> {ok, V};
                Error -> Error
            end;
        Error ->
            Error
    end.

%% @doc Drops `App''s pin: the coordinator follows git for it again.
-spec unpin(atom()) -> ok | {error, term()}.
unpin(App) ->
    coordinator_call({unpin, App}).

%% The spec the cluster runs for `App' (its digest, from the coordinator)
%% and the one before it, as a member that settled it kept them.
-spec settled(atom(), rollback | pin) ->
          {ok, #app_spec{}, #app_spec{} | undefined, bc_gitops_rollout:digest()}
          | {error, term()}.
settled(App, Reason) ->
    case coordinator_call({settled_at, App, Reason}) of
        {ok, Nodes, Digest} -> settled_on(Nodes, App, Digest);
        Error -> Error
    end.

%% The first of `Nodes' that still has `App' settled at `Digest' gives its
%% two specs.
-spec settled_on([node()], atom(), bc_gitops_rollout:digest()) ->
          {ok, #app_spec{}, #app_spec{} | undefined, bc_gitops_rollout:digest()}
          | {error, term()}.
settled_on([], App, _Digest) ->
    {error, {rollout_in_progress, App}};
settled_on([Node | Rest], App, Digest) ->
    try erpc:call(Node, bc_gitops_reconciler, settled, [App], 5000) of
        {ok, {Current, Before}} ->
            case bc_gitops_rollout:digest(Current) of
                Digest -> {ok, Current, Before, Digest};
                _ -> settled_on(Rest, App, Digest)
            end;
        _ ->
            settled_on(Rest, App, Digest)
    catch
        _:_ -> settled_on(Rest, App, Digest)
    end.

-spec coordinator_call(term()) -> term().
coordinator_call(Request) ->
    case coordinator() of
        {ok, Pid} ->
            try gen_server:call(Pid, Request, 10000)
            catch exit:Why -> {error, {coordinator_unreachable, reason(Why)}}
            end;
        Error ->
            Error
    end.

%% Asks the coordinator; when it goes away meanwhile, waits for the next
%% one (a second at a time, `Tries' times).
-spec ask(reconcile | plan, non_neg_integer()) -> term().
ask(Kind, Tries) ->
    case coordinator() of
        {ok, Pid} ->
            try gen_server:call(Pid, {Kind, node()}, infinity)
            catch exit:Why when Tries > 0 ->
                    ?LOG_NOTICE("bc_gitops: the coordinator went away (~p); asking again",
                                [reason(Why)]),
                    timer:sleep(?RETRY_MS),
                    ask(Kind, Tries - 1);
                  exit:Why ->
                    {error, {coordinator_unreachable, reason(Why)}}
            end;
        {error, no_coordinator} when Tries > 0 ->
            timer:sleep(?RETRY_MS),
            ask(Kind, Tries - 1);
        Error ->
            Error
    end.

-spec reason(term()) -> term().
reason({Reason, {gen_server, call, _}}) -> Reason;
reason(Reason) -> Reason.

-spec call(term(), timeout()) -> term().
call(Request, Timeout) ->
    try gen_server:call(?SERVER, Request, Timeout)
    catch exit:{noproc, _} -> {error, not_clustered}
    end.

%%% gen_server

%% @private
-spec init(bc_gitops_config:config()) -> {ok, #st{}}.
init(#{cluster := #{members := Members}} = Config) ->
    process_flag(trap_exit, true),
    ok = net_kernel:monitor_nodes(true),
    self() ! elect,
    {ok, #st{config = Config, members = Members, name = bc_gitops_coordinator:name(Config)}}.

%% @private
-spec handle_call(term(), gen_server:from(), #st{}) -> {reply, term(), #st{}}.
handle_call(coordinator, _From, #st{coordinator = {Pid, _}} = St) ->
    {reply, {ok, Pid}, St};
handle_call(coordinator, _From, St) ->
    {reply, {error, no_coordinator}, St};
handle_call(info, _From, #st{coordinator = C, own = Own} = St) ->
    {Node, Role} = case C of
                       {Pid, _} when Pid =:= Own -> {node(), coordinator};
                       {Pid, _} -> {node(Pid), member};
                       undefined -> {undefined, member}
                   end,
    {reply, {ok, #{coordinator => Node, role => Role}}, St};
handle_call(_Other, _From, St) ->
    {reply, {error, unknown_call}, St}.

%% @private
-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast(tell, #st{coordinator = {Pid, _}} = St) ->
    gen_server:cast(bc_gitops_reconciler, {report_to, Pid}),
    {noreply, St};
handle_cast(_Msg, St) ->
    {noreply, St}.

%% @private
-spec handle_info(term(), #st{}) -> {noreply, #st{}}.
handle_info(elect, St) ->
    {noreply, elect(St)};
handle_info({'DOWN', Ref, process, _Pid, _Why}, #st{coordinator = {_, Ref}} = St) ->
    {noreply, elect(St#st{coordinator = undefined})};
handle_info({'EXIT', Pid, _Why}, #st{own = Pid} = St) ->
    {noreply, St#st{own = undefined}};
handle_info({nodeup, _Node}, St) ->
    {noreply, St};
handle_info({nodedown, _Node}, St) ->
    {noreply, St};
handle_info(_Other, St) ->
    {noreply, St}.

%% Connects to the members not connected yet (in a process of its own: a
%% connect can take seconds), then finds or becomes the coordinator.
-spec elect(#st{}) -> #st{}.
elect(#st{members = Members, coordinator = Known} = St) ->
    Missing = Members -- [node() | nodes()],
    Alive = is_pid(St#st.connector) andalso is_process_alive(St#st.connector),
    Connector = case Missing =/= [] andalso not Alive of
                    true -> spawn(fun() -> [net_kernel:connect_node(N) || N <- Missing] end);
                    false -> St#st.connector
                end,
    St1 = case Known of
              undefined -> find(St#st{connector = Connector});
              _ -> St#st{connector = Connector}
          end,
    _ = (St1#st.coordinator =:= undefined orelse Missing =/= []) andalso
        erlang:send_after(?RETRY_MS, self(), elect),
    St1.

-spec find(#st{}) -> #st{}.
find(#st{name = Name, members = Members, config = Config} = St) ->
    case global:whereis_name(Name) of
        Pid when is_pid(Pid) ->
            case lists:member(node(Pid), Members) of
                true ->
                    known(Pid, St);
                false ->
                    ?LOG_WARNING("bc_gitops: the coordinator on ~p is not a member; ignored",
                                 [node(Pid)]),
                    St
            end;
        undefined ->
            case bc_gitops_coordinator:start_link(Config) of
                {ok, Pid} -> known(Pid, St#st{own = Pid});
                ignore -> find_again(St);
                {error, _} -> St
            end
    end.

%% A coordinator found: watched, and this node's reconciler reports to it
%% (a member that starts late, or a new coordinator, hears of it so).
-spec known(pid(), #st{}) -> #st{}.
known(Pid, St) ->
    gen_server:cast(bc_gitops_reconciler, {report_to, Pid}),
    St#st{coordinator = {Pid, erlang:monitor(process, Pid)}}.

%% Another member registered first, between the look and the try.
-spec find_again(#st{}) -> #st{}.
find_again(#st{name = Name} = St) ->
    case global:whereis_name(Name) of
        Pid when is_pid(Pid) -> find(St);
        undefined -> St
    end.

%% @private What sys:get_status/1 and crash reports show: credentials and
%% encrypted env values masked (bc_gitops_secrets:format_status/1).
-spec format_status(gen_server:format_status()) -> gen_server:format_status().
format_status(Status) ->
    bc_gitops_secrets:format_status(Status).
