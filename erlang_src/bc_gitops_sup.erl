%%% @doc The top supervisor: it holds the guests of `isolation => vm' apps
%%% ({@link bc_gitops_vm}: started first, so stopped last, after the
%%% reconciler), the health monitor and the reconciler, started from the application env at boot or from
%%% {@link bc_gitops:start_reconciler/1}; in cluster mode also the node's
%%% part in the cluster ({@link bc_gitops_cluster}), after the reconciler,
%%% then the HTTP face when configured: the listener ({@link bc_gitops_http})
%%% and the notifications ({@link bc_gitops_notify}).
-module(bc_gitops_sup).

-behaviour(supervisor).

-export([start_link/1, start_reconciler/1, stop_reconciler/0]).
-export([init/1]).

-define(CHILD, bc_gitops_reconciler).
-define(CLUSTER, bc_gitops_cluster).
%% Started with the reconciler, after it, in this order.
-define(EXTRA, [?CLUSTER, bc_gitops_http, bc_gitops_notify]).

%% @doc `Config' is the reconciler's checked configuration, or `none' to
%% start without a reconciler.
-spec start_link(bc_gitops_config:config() | none) -> supervisor:startlink_ret().
start_link(Config) ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, Config).

%% @doc Replaces any running reconciler with one for `Config'.
-spec start_reconciler(bc_gitops_config:config()) -> {ok, pid()} | {error, term()}.
start_reconciler(Config) ->
    ok = stop_reconciler(),
    case start_child(child(Config)) of
        {ok, Pid} -> start_extra(extra_children(Config), Pid);
        {error, _} = Error -> Error
    end.

-spec start_extra([supervisor:child_spec()], pid()) -> {ok, pid()} | {error, term()}.
start_extra([], Pid) ->
    {ok, Pid};
start_extra([Child | Rest], Pid) ->
    case start_child(Child) of
        {ok, _} -> start_extra(Rest, Pid);
        {error, _} = Error -> ok = stop_reconciler(), Error
    end.

%% Why a child did not start, without its child spec.
-spec start_child(supervisor:child_spec()) -> {ok, pid()} | {error, term()}.
start_child(Child) ->
    case supervisor:start_child(?MODULE, Child) of
        {ok, Pid} -> {ok, Pid};
        {error, {Why, Spec}} when element(1, Spec) =:= child -> {error, Why};
        {error, _} = Error -> Error
    end.

%% @doc Stops the reconciler (and its cluster part), if one runs.
-spec stop_reconciler() -> ok.
stop_reconciler() ->
    _ = [begin
             _ = supervisor:terminate_child(?MODULE, Id),
             supervisor:delete_child(?MODULE, Id)
         end || Id <- lists:reverse([?CHILD | ?EXTRA])],
    ok.

%% @private
-spec init(bc_gitops_config:config() | none) ->
    {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init(Config) ->
    %% The default runtime's record of the apps it runs: owned here, so it
    %% lives exactly as long as the application.
    _ = ets:new(bc_gitops_runtime_default:table(), [named_table, public, set]),
    %% So are what runs now, the metrics and the latest events: written
    %% by the processes doing the work, read by status() and the HTTP face.
    ok = bc_gitops_progress:new(),
    ok = bc_gitops_metrics:new(),
    ok = bc_gitops_events:new(),
    Health = #{id => bc_gitops_health_monitor,
               start => {bc_gitops_health_monitor, start_link, []},
               modules => [bc_gitops_health_monitor]},
    Guests = #{id => bc_gitops_vm,
               start => {bc_gitops_vm, start_link, []},
               %% Time to stop every guest, side by side.
               shutdown => 30000,
               modules => [bc_gitops_vm]},
    case Config of
        none -> {ok, {flags(), [Guests, Health]}};
        _ -> {ok, {flags(), [Guests, Health, child(Config) | extra_children(Config)]}}
    end.

-spec flags() -> supervisor:sup_flags().
flags() -> #{strategy => one_for_one, intensity => 5, period => 60}.

-spec extra_children(bc_gitops_config:config()) -> [supervisor:child_spec()].
extra_children(Config) ->
    cluster_child(Config) ++ bc_gitops_http:child_specs(Config)
        ++ bc_gitops_notify:child_specs(Config).

-spec cluster_child(bc_gitops_config:config()) -> [supervisor:child_spec()].
cluster_child(#{cluster := #{}, repo_url := Url} = Config) when Url =/= undefined ->
    [#{id => ?CLUSTER,
       start => {bc_gitops_cluster, start_link, [Config]},
       restart => permanent,
       shutdown => 5000,
       type => worker,
       modules => [bc_gitops_cluster]}];
cluster_child(_Config) ->
    [].

-spec child(bc_gitops_config:config()) -> supervisor:child_spec().
child(Config) ->
    #{id => ?CHILD,
      start => {bc_gitops_reconciler, start_link, [Config]},
      restart => permanent,
      shutdown => 10000,
      type => worker,
      modules => [bc_gitops_reconciler]}.
