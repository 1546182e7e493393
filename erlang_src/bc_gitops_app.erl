%%% @doc The `bc_gitops' application. It checks its configuration before
%%% anything starts: a bad value stops the boot with an error naming the
%%% option, and no half-configured reconciler runs. Without `repo_url' the
%%% reconciler starts idle and says so in `bc_gitops:status/0'.
-module(bc_gitops_app).

-behaviour(application).

-export([start/2, stop/1]).

%% @private
-spec start(application:start_type(), term()) -> {ok, pid()} | {error, term()}.
start(_Type, _Args) ->
    case bc_gitops_nif:load_error() of
        ok ->
            case bc_gitops_config:from_env() of
                {ok, Config} -> bc_gitops_sup:start_link(Config);
                {error, _} = Error -> Error
            end;
        {error, Why} ->
            {error, {nif_not_loaded, Why}}
    end.

%% @private
-spec stop(term()) -> ok.
stop(_State) ->
    ok.
