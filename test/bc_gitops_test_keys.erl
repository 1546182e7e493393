%%% Keys and signed commits for the trust tests, made with the real tools
%%% (ssh-keygen, gpg, age, git commit -S), each run without a shell:
%%% Debian's openssh-client, gnupg and age (scripts/setup.sh).
%%%
%%% A signer is `{ssh, PrivateKeyFile}' or `{gpg, GnupgHome, UserId}'.
%%% Also a private TLS CA, made with OTP's public_key.
-module(bc_gitops_test_keys).

-include_lib("public_key/include/public_key.hrl").

-export([ssh_key/2, allowed_signers/2, gpg_home/2, gpg_key/3, gpg_export/2, gpg_revoke/2,
         gpg_fake_time/2, gpg_stop/1, signed_commit/3, age_key/2, age_encrypt/3,
         tls_server/1]).

-import(bc_gitops_test_util, [run/4]).

%% A fresh ed25519 key `Dir/Name' (and `.pub'), no passphrase.
ssh_key(Dir, Name) ->
    Path = filename:join(Dir, Name),
    _ = run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", Name, "-f", Path], Dir, []),
    Path.

%% An allowed_signers file `Dir/allowed_signers' with one line per
%% {Principal, KeyFile} (the key's .pub is read).
allowed_signers(Dir, Entries) ->
    Path = filename:join(Dir, "allowed_signers"),
    Lines = [[Principal, " ", element(2, file:read_file(Key ++ ".pub"))]
             || {Principal, Key} <- Entries],
    ok = file:write_file(Path, ["# who may sign the gitops repository\n" | Lines]),
    Path.

%% A GNUPGHOME `Dir/Name'.
gpg_home(Dir, Name) ->
    Home = filename:join(Dir, Name),
    ok = filelib:ensure_path(Home),
    ok = file:change_mode(Home, 8#700),
    Home.

%% A signing key for `User' in `Home', expiring after `Expiry' ("never",
%% "1d"...).
gpg_key(Home, User, Expiry) ->
    _ = gpg(Home, ["--quick-gen-key", User, "ed25519", "sign", Expiry]),
    ok.

%% The armored public keys of `Keys' ({Home, User} pairs) in `File'.
gpg_export(File, Keys) ->
    ok = file:write_file(File, [gpg(Home, ["--armor", "--export", User]) || {Home, User} <- Keys]),
    File.

%% Revokes `User''s key in `Home' with the revocation certificate gpg wrote
%% when it made the key (gpg signs no more with it).
gpg_revoke(Home, User) ->
    Listing = gpg(Home, ["--with-colons", "--list-keys", User]),
    [Fpr | _] = [string:trim(F, both, ":")
                 || Line <- binary:split(Listing, <<"\n">>, [global]),
                    <<"fpr:::::::::", F/binary>> <- [Line]],
    Rev = filename:join([Home, "openpgp-revocs.d", <<Fpr/binary, ".rev">>]),
    {ok, Text} = file:read_file(Rev),
    ok = file:write_file(Rev, binary:replace(Text, <<":-----BEGIN">>, <<"-----BEGIN">>)),
    _ = gpg(Home, ["--import", Rev]),
    ok.

%% Makes gpg in `Home' believe it is `Time' ("20200101T000000") from now on.
gpg_fake_time(Home, Time) ->
    ok = file:write_file(filename:join(Home, "gpg.conf"), ["faked-system-time ", Time, "\n"]).

%% Stops the gpg-agent a GNUPGHOME started.
gpg_stop(Home) ->
    catch run("gpgconf", ["--kill", "all"], Home, [{"GNUPGHOME", Home}]),
    ok.

gpg(Home, Args) ->
    run("gpg", ["--batch", "--pinentry-mode", "loopback", "--passphrase", "" | Args], Home,
        [{"GNUPGHOME", Home}]).

%% Commits everything in `Repo' signed by `Signer' (`none': unsigned);
%% returns the commit's SHA.
signed_commit(Repo, none, Message) ->
    bc_gitops_test_util:commit(Repo, Message);
signed_commit(Repo, Signer, Message) ->
    {Args, Env} = case Signer of
                      {ssh, Key} -> {["-c", "gpg.format=ssh", "-c", "user.signingkey=" ++ Key], []};
                      {gpg, Home, User} -> {["-c", "gpg.format=openpgp",
                                             "-c", "user.signingkey=" ++ User],
                                            [{"GNUPGHOME", Home}]}
                  end,
    _ = bc_gitops_test_util:git(Repo, ["add", "-A"]),
    _ = bc_gitops_test_util:git(Repo, ["-c", "user.name=t", "-c", "user.email=t@t" | Args]
                                ++ ["commit", "-q", "-S", "--allow-empty", "-m", Message], Env),
    string:trim(bc_gitops_test_util:git(Repo, ["rev-parse", "HEAD"])).

%% An age identity file `Dir/Name' and its recipient.
age_key(Dir, Name) ->
    Path = filename:join(Dir, Name),
    _ = run("age-keygen", ["-o", Path], Dir, []),
    {Path, string:trim(run("age-keygen", ["-y", Path], Dir, []))}.

%% `Plain' encrypted to `Recipient', ASCII-armored, as `age -r R -a' makes it.
age_encrypt(Dir, Recipient, Plain) ->
    In = filename:join(Dir, "plain-" ++ integer_to_list(erlang:unique_integer([positive]))),
    ok = file:write_file(In, Plain),
    try run("age", ["-a", "-r", Recipient, In], Dir, [])
    after file:delete(In)
    end.

%% A test CA, written as PEM to `Dir/ca.pem' (what `ca_file' names), and
%% the TLS server options of a certificate it signed for "localhost":
%% {CaFile, SslServerOptions}.
tls_server(Dir) ->
    San = #'Extension'{extnID = ?'id-ce-subjectAltName', critical = false,
                       extnValue = [{dNSName, "localhost"}]},
    Key = fun() -> public_key:generate_key({namedCurve, secp256r1}) end,
    #{server_config := Server, client_config := Client} =
        public_key:pkix_test_data(
          #{server_chain => #{root => [{key, Key()}], intermediates => [],
                              peer => [{key, Key()}, {extensions, [San]}]},
            client_chain => #{root => [{key, Key()}], intermediates => [],
                              peer => [{key, Key()}]}}),
    CaFile = filename:join(Dir, "ca.pem"),
    ok = file:write_file(CaFile, public_key:pem_encode(
                                   [{'Certificate', Der, not_encrypted}
                                    || Der <- proplists:get_value(cacerts, Client)])),
    {CaFile, [{cert, proplists:get_value(cert, Server)}, {key, proplists:get_value(key, Server)},
              {cacerts, proplists:get_value(cacerts, Server)}]}.
