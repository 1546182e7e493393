%%% @doc Keeps a local checkout of a git repository at a ref, in the Rust NIF
%%% (libgit2 through git2) on a thread of its own: the calling process waits
%%% for a message, and no scheduler, normal or dirty, is held.
%%%
%%% The checkout is forced to the fetched commit: local edits and stray
%%% files are overwritten, never merged. A damaged clone is re-cloned beside
%%% the old one and swapped in only when complete, so the last good checkout
%%% stays usable until then. Credentials never appear in an error: URLs and
%%% secrets are redacted.
%%%
%%% With `verify', the commit checked out (or the annotated tag naming it)
%%% is checked for a good signature of an allowed key, in the NIF, on the
%%% same thread: the outcome's `verified' says how it went. The checkout
%%% stays whatever the verdict; the caller must not use a commit whose
%%% check failed.
%%%
%%% libgit2's network settings are process-wide, made once: a server silent
%%% for 30 s, or a connect not accepted within 15 s, is cut off whatever
%%% `timeout' says; `timeout' ends the sync at libgit2's next callback
%%% (progress, credentials, certificate) after it; a slow DNS lookup is not
%%% bounded. A `ca_file' is added to libgit2's trusted certificates by the
%%% first sync that names it, and stays trusted for every HTTPS remote of
%%% the node.
%%%
%%% A sync whose commit has not moved, of a checkout nobody touched, lists
%%% the remote's refs and checks the checkout against a record of it that
%%% the last sync left: a stat of every path. With `watch => true' (Linux),
%%% an inotify watch set when the record was taken stands in for those
%%% stats while it has seen no change, so the check costs the same for ten
%%% thousand files as for ten. It takes one inotify instance per checkout
%%% (a node keeps at most 8), so it is for the gitops repository, not for
%%% every app source; when the kernel refuses one, the stats are done.
-module(bc_gitops_git).

-export([sync/1]).

-export_type([options/0, outcome/0, error_kind/0, verification/0, unverified_kind/0]).

-type options() :: #{
    url := unicode:chardata(),
    local_path := file:filename_all(),
    %% A branch (default "main"), a tag, or a full 40-hex commit SHA.
    ref => unicode:chardata(),
    %% Milliseconds for each network step, at libgit2's callbacks (default
    %% 60000; see the module doc).
    timeout => pos_integer(),
    ssh_key => file:filename_all(),
    ssh_passphrase => unicode:chardata(),
    %% Default ~/.ssh/known_hosts.
    ssh_known_hosts => file:filename_all(),
    %% true (default): refuse hosts whose key is not in known_hosts.
    ssh_verify_host => boolean(),
    username => unicode:chardata(),
    token => unicode:chardata(),
    %% An extra CA (PEM) trusted for HTTPS besides the system store, from
    %% this sync on, node-wide (see the module doc).
    ca_file => file:filename_all(),
    %% Check the signature of the commit checked out (or of the annotated
    %% tag naming it) against these key files; the verdict is `verified'.
    verify => #{allowed_signers => file:filename_all(), gpg_keys => file:filename_all()},
    %% false (default): whether to watch the checkout with inotify between
    %% syncs (see the module doc); for the gitops repository's checkout.
    watch => boolean()
}.

-type outcome() :: #{
    commit := binary(),
    %% Whether the commit differs from the one checked out before the call.
    changed := boolean(),
    %% Why the local clone was re-cloned, when it was.
    healed := binary() | undefined,
    %% With `verify': the signature check of what is checked out (which
    %% stays checked out, for inspection, whatever the result).
    verified => verification()
}.

-type verification() :: #{
    result := ok | {error, {unverified_kind(), binary()}},
    %% On success: which object carried the signature, and whose it is
    %% (SSH: SHA256 fingerprint and the principals of its allowed_signers
    %% line; OpenPGP: primary key fingerprint and first user id).
    signer => #{object := commit | tag, format := ssh | openpgp,
                key := binary(), principal := binary()},
    duration_us := non_neg_integer()
}.

-type unverified_kind() :: unsigned | unknown_key | expired_key | revoked_key | bad_signature
                         | unsupported | keys.

-type error_kind() :: invalid_input | unreachable | auth | certificate | ref_not_found
                    | timeout | not_a_repository | disk_full | io | corrupt | other.

%% @doc Clones `url' into `local_path' when needed, then fetches `ref' and
%% checks it out.
-spec sync(options()) -> {ok, outcome()} | {error, {error_kind(), binary()}}.
sync(#{url := _, local_path := _} = Opts) ->
    Texts = [url, local_path, ref, ssh_key, ssh_passphrase, ssh_known_hosts, username,
             token, ca_file],
    Encode = fun(verify, Keys) when is_map(Keys) ->
                     maps:map(fun(K, V) -> encode(true, K, V) end, Keys);
                (K, V) ->
                     encode(lists:member(K, Texts), K, V)
             end,
    try maps:map(Encode, Opts) of
        Encoded ->
            Ref = make_ref(),
            case bc_gitops_nif:git_sync_start(Encoded, Ref) of
                ok -> wait(Ref, maps:get(timeout, Opts, 60000));
                {error, _} = Error -> Error
            end
    catch
        throw:{invalid, K} ->
            {error, {invalid_input, iolist_to_binary(io_lib:format("bad value for ~p", [K]))}}
    end;
sync(_Opts) ->
    {error, {invalid_input, <<"url and local_path are required">>}}.

-spec encode(boolean(), atom(), term()) -> term().
encode(true, _K, V) when is_binary(V) -> V;
encode(true, K, V) ->
    case catch unicode:characters_to_binary(V) of
        B when is_binary(B) -> B;
        _ -> throw({invalid, K})
    end;
encode(false, timeout, V) when is_integer(V), V > 0 -> V;
encode(false, ssh_verify_host, V) when is_boolean(V) -> V;
encode(false, watch, V) when is_boolean(V) -> V;
encode(false, K, _V) -> throw({invalid, K}).

%% The NIF enforces the timeout itself; the guard here only covers a thread
%% that never answers.
-spec wait(reference(), pos_integer()) -> {ok, outcome()} | {error, {error_kind(), binary()}}.
wait(Ref, Timeout) ->
    receive
        {bc_gitops_git, Ref, Result} -> Result
    after 2 * Timeout + 60000 ->
        {error, {timeout, <<"git sync thread did not answer">>}}
    end.
