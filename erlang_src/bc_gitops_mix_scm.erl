%%% @doc A Mix SCM (the `Mix.SCM' behaviour of Elixir's Mix) for hex
%%% dependencies that {@link bc_gitops_hex} already fetched, verified and
%%% laid out in the project's `deps/'. It never runs in the bc_gitops node:
%%% {@link bc_gitops_build} copies this module's object code into its
%%% `MIX_HOME' and runs mix with it appended to `Mix.SCM.available()'.
%%%
%%% Mix asks the Hex archive for every dependency given by a version
%%% requirement (`{:dep, "~> 1.0"}', and the hex deps of a rebar3 dep), and
%%% the archive is not installed: without an SCM that accepts them, mix
%%% stops with "Could not find an SCM" (or offers to download Hex). This
%%% one accepts what the Git and Path SCMs before it did not, and finds each
%%% dependency at `deps/<app>', as a Hex dependency would be. Mix itself
%%% still checks each dependency's version against every requirement on it,
%%% and builds it with the tool its files name (see {@link managers/1}).
%%% Nothing is ever fetched: `checkout' and `update' fail, so a dependency
%%% missing from `deps/' fails the build ("the dependency is not
%%% available").
%%%
%%% The callbacks are called by Mix with Elixir keyword lists; the module
%%% calls nothing of Elixir, so the bc_gitops application builds and runs
%%% without it.
-module(bc_gitops_mix_scm).

-export(['fetchable?'/0, format/1, format_lock/1, accepts_options/2, 'checked_out?'/1,
         lock_status/1, 'equal?'/2, managers/1, checkout/1, update/1]).

-type opts() :: [{atom(), term()}].

%% @doc Dependencies live in `deps/' and build once, as fetched ones do.
-spec 'fetchable?'() -> true.
'fetchable?'() -> true.

%% @doc How mix names the source in its messages.
-spec format(opts()) -> binary().
format(_Opts) -> <<"hex package, offline">>.

%% @doc Nothing is locked: bc_gitops resolved the versions.
-spec format_lock(opts()) -> nil.
format_lock(_Opts) -> nil.

%% @doc Accepts every dependency the SCMs before it did not (git and path
%% ones are theirs), as the Hex SCM would.
-spec accepts_options(atom(), opts()) -> opts().
accepts_options(_App, Opts) -> Opts.

%% @doc Whether the dependency is in `deps/<app>' (its `dest').
-spec 'checked_out?'(opts()) -> boolean().
'checked_out?'(Opts) -> filelib:is_dir(dest(Opts)).

%% @doc `mix.lock' is not consulted: the tree was resolved and its
%% checksums verified by bc_gitops before mix ran.
-spec lock_status(opts()) -> ok.
lock_status(_Opts) -> ok.

%% @doc Two declarations of a dependency are the same when they name the
%% same directory.
-spec 'equal?'(opts(), opts()) -> boolean().
'equal?'(A, B) -> dest(A) =:= dest(B).

%% @doc The dependency's build tools, from its files, as the Hex SCM
%% gives them from the package's metadata: mix would otherwise build every
%% dependency of a rebar3 one with rebar3, a mix package too.
-spec managers(opts()) -> [mix | rebar3].
managers(Opts) ->
    [M || {M, File} <- [{mix, "mix.exs"}, {rebar3, "rebar.config"}],
          filelib:is_regular(filename:join(dest(Opts), File))].

%% @doc Never fetches: fails as `Mix.raise/1' would.
-spec checkout(opts()) -> no_return().
checkout(Opts) ->
    erlang:error(#{'__struct__' => 'Elixir.Mix.Error', '__exception__' => true, mix => 1,
                   message => iolist_to_binary(["bc_gitops builds hex packages offline: ",
                                                dest(Opts), " was not fetched"])}).

%% @doc Never fetches, as {@link checkout/1}.
-spec update(opts()) -> no_return().
update(Opts) -> checkout(Opts).

-spec dest(opts()) -> binary() | string().
dest(Opts) ->
    case lists:keyfind(dest, 1, Opts) of
        {dest, Dest} -> Dest;
        false -> ""
    end.
